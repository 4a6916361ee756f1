"""SSE end to end on the local stack: the deployed app under uvicorn, read with a spec-conformant
parser (httpx-sse) and with curl -N. What a deployed stack is checked for as well (a resume by
Last-Event-ID, cursors shared with the WebSocket API) is in tests/contract."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from tests.conftest import example, signal
from tests.integration.conftest import outputs, running_local_stack, until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]
STREAM_SECONDS = 6  # streams end themselves this soon, so the planned end is seen in a test
HEARTBEAT_SECONDS = 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(
        tmp_path_factory.mktemp("sse"),
        "--sse-max-stream-seconds",
        str(STREAM_SECONDS),
        "--sse-heartbeat-seconds",
        str(HEARTBEAT_SECONDS),
    ) as state:
        yield state


def url(stack: LocalState) -> str:
    return outputs(stack)["SseUrl"] + "events"


def publish(stack: LocalState, events: Any) -> Any:
    return local_client(stack).publish(events)


def read(
    stack: LocalState,
    role: str,
    *,
    until: int,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    on_open: Any = None,
) -> list[ServerSentEvent]:
    """Domain events (not heartbeats) of one stream: read until `until` of them arrived and the next
    heartbeat after them (so nothing else was on the way), or the stream ended."""
    token = issue(stack, role, f"{role}-sse")
    received: list[ServerSentEvent] = []
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=STREAM_SECONDS + 5)) as client,
        connect_sse(
            client,
            "GET",
            url(stack),
            params=params,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
        ) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if not sse.data:  # a comment-only block (": heartbeat"), which httpx-sse still yields
                continue
            if sse.event == "heartbeat" and on_open is not None:
                on_open()
                on_open = None
            elif sse.event == "heartbeat" and len(received) >= until:
                break
            elif sse.event == "end":
                received.append(sse)
                break
            elif sse.event != "heartbeat":
                received.append(sse)
    return received


def domain(events: list[ServerSentEvent]) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in events if e.event not in ("end", "truncated")]


@pytest.mark.connections
@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no token", 401, "invalid_token"),
        ("expired", 401, "token_expired"),
        ("bad signature", 401, "invalid_token"),
        ("foreign origin", 403, "origin_not_allowed"),
        ("forbidden type", 403, "type_not_allowed"),
        ("unknown type", 400, "unknown_type"),
        ("bad cursor", 400, "invalid_cursor"),
    ],
)
def test_refusals_answer_json_with_a_stable_code_before_any_stream(stack, case, status, code):
    config = load("dev")
    now = int(time.time())
    claims = {"iss": config.auth.issuer, "aud": config.auth.audience, "sub": "m", "role": "viewer"}
    token = {
        "no token": "",
        "expired": jwt.encode({**claims, "exp": now - 120}, stack.jwt_secret(), algorithm="HS256"),
        "bad signature": jwt.encode({**claims, "exp": now + 60}, "x" * 40, algorithm="HS256"),
    }.get(case, issue(stack, "viewer", "v"))
    params = {"token": token}
    headers = {"Origin": "https://evil.example"} if case == "foreign origin" else {}
    if case == "forbidden type":
        params["types"] = "signal.created,risk.alert"
    if case == "unknown type":
        params["types"] = "order.filled"
    if case == "bad cursor":
        params["cursor"] = "c1.not-ours"
    answer = httpx.get(url(stack), params=params, headers=headers, timeout=10)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    if token:
        assert token not in (stack.directory / "stack.log").read_text()
    # Who asks is refused: counted as an authentication failure of SSE, by its kind.
    kind = {"no token": "missing", "expired": "expired", "bad signature": "signature"}.get(case)
    if case == "foreign origin":
        kind = "origin"
    if kind is not None:
        asyncio.run(until(lambda: kind in auth_failures(stack)))


def auth_failures(stack: LocalState) -> list[str]:
    """The kinds of the SSE authentication failures the stack's metrics (EMF) counted."""
    lines = (stack.directory / "stack.log").read_text().splitlines()
    documents = [json.loads(line) for line in lines if line.startswith('{"_aws"') and "AuthFailures" in line]
    return [d["reason"] for d in documents if d.get("transport") == "sse"]


@pytest.mark.events
def test_each_role_streams_exactly_the_types_it_may_see(stack, settings):
    roles = load("dev").roles
    all_types = sorted(settings.streams_by_type)
    start = local_client(stack).streams()["streams"]
    cursor = _cursor(start)
    publish(stack, [example(t, settings) for t in all_types])
    for role, allowed in roles.items():
        received = read(stack, role, until=len(allowed), params={"cursor": cursor})
        assert sorted(e["type"] for e in domain(received)) == sorted(allowed), role


@pytest.mark.reconnect
@pytest.mark.events
def test_prev_is_the_previous_event_among_the_streams_types(stack, settings):
    cursor = _cursor(local_client(stack).streams()["streams"])
    publish(stack, [signal(), example("decision.made", settings), example("proposal.updated", settings)])
    publish(stack, [signal()])
    params = {"cursor": cursor, "types": "signal.created,proposal.updated"}
    first, update, last = domain(read(stack, "viewer", until=3, params=params))
    assert update["prev"] == first["seq"] and last["prev"] == update["seq"]


@pytest.mark.reconnect
@pytest.mark.events
def test_the_planned_end_sends_retry_and_a_resume_from_it_loses_nothing(stack):
    cursor = _cursor(local_client(stack).streams()["streams"])
    during = [signal() for _ in range(2)]
    received = read(
        stack,
        "viewer",
        until=10**6,  # read to the planned end
        params={"cursor": cursor, "types": "signal.created"},
        on_open=lambda: publish(stack, during[0]),
    )
    end = received[-1]
    assert end.event == "end" and end.retry is not None and end.retry > 0
    assert [e["id"] for e in domain(received)] == [during[0]["id"]]
    publish(stack, during[1])  # published between the planned end and the reconnect
    resumed = read(
        stack, "viewer", until=1, params={"types": "signal.created"}, headers={"Last-Event-ID": end.id}
    )
    assert [e["id"] for e in domain(resumed)] == [during[1]["id"]]


@pytest.mark.connections
def test_curl_sees_the_retry_hint_heartbeat_comments_and_heartbeat_events(stack):
    token = issue(stack, "viewer", "curl")
    curl = subprocess.Popen(
        ["curl", "-N", "-s", "-H", f"Authorization: Bearer {token}", url(stack)],
        stdout=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(30, curl.kill)  # a read below never waits longer than this
    watchdog.start()
    lines: list[str] = []
    try:
        assert curl.stdout is not None
        for line in iter(curl.stdout.readline, ""):  # until two heartbeats, however long they take
            lines.append(line.rstrip("\n"))
            if sum(1 for read in lines if read.startswith("data: ")) >= 2:
                break
    finally:
        watchdog.cancel()
        curl.terminate()
        curl.wait(timeout=10)
    body = "\n".join(lines)
    assert body.startswith(": heartbeat\n\nretry: ")
    assert lines.count(": heartbeat") == lines.count("event: heartbeat") >= 2  # each one, the first too
    beats = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert beats and all({"server_time", "heads"} <= set(beat) for beat in beats)


def _cursor(heads: dict[str, int]) -> str:
    from streaming import cursor as cursors

    return cursors.encode(heads)


@pytest.mark.connections
def test_a_client_that_leaves_ends_its_stream_on_the_server_and_its_token_is_never_logged(stack):
    token = issue(stack, "viewer", "leaver")
    with (
        httpx.Client(timeout=10) as client,
        connect_sse(client, "GET", url(stack), params={"token": token}) as source,
    ):
        assert next(source.iter_sse()).event == "heartbeat"  # open; then hang up
    log = stack.directory / "stack.log"
    deadline = time.monotonic() + 30
    closed: list[dict[str, Any]] = []
    while not closed and time.monotonic() < deadline:
        lines = [json.loads(line) for line in log.read_text().splitlines() if '"sse stream closed"' in line]
        closed = [entry for entry in lines if entry.get("subject") == "leaver"]
        time.sleep(0.1)
    assert closed and closed[0]["how"] == "client left"
    assert token not in log.read_text()


@pytest.mark.connections
@pytest.mark.parametrize(("seconds_left", "accepted"), [(-30, False), (-5, False), (2, False), (15, True)])
def test_expiry_is_strict_a_token_needs_three_seconds_left_to_open_a_stream(stack, seconds_left, accepted):
    """The same rule as the WebSocket handshake (test_websocket.py)."""
    config = load("dev")
    claims = {"iss": config.auth.issuer, "aud": config.auth.audience, "sub": "x", "role": "viewer"}
    token = jwt.encode(
        {**claims, "exp": int(time.time()) + seconds_left}, stack.jwt_secret(), algorithm="HS256"
    )
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=20)) as client,
        client.stream("GET", url(stack), params={"token": token}) as answer,
    ):
        if accepted:
            assert answer.status_code == 200
            assert next(answer.iter_lines()) == ": heartbeat"
        else:
            answer.read()
            assert (answer.status_code, answer.json()["error"]["code"]) == (401, "token_expired")


@pytest.mark.connections
def test_a_token_about_to_expire_is_refused_and_one_expiring_soon_ends_the_stream_then(stack):
    almost = issue(stack, "viewer", "almost", ttl_seconds=2)
    answer = httpx.get(url(stack), params={"token": almost}, timeout=10)
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "token_expired")
    soon = issue(stack, "viewer", "soon", ttl_seconds=5)  # shorter than the stream (6 s)
    ends = []
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=20)) as client,
        connect_sse(client, "GET", url(stack), params={"token": soon}) as source,
    ):
        for sse in source.iter_sse():
            if sse.event == "end":
                ends.append(json.loads(sse.data))
                break
    assert ends == [{"reconnect": True, "reason": "token_expiring"}]


def test_a_cursor_ahead_of_the_streams_is_refused(stack):
    from streaming import cursor as cursors

    ahead = cursors.encode({"market": 10**9})
    answer = httpx.get(url(stack), params={"token": issue(stack, "viewer", "v"), "cursor": ahead}, timeout=10)
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_cursor")


@pytest.fixture(scope="module")
def long_streams(tmp_path_factory) -> Iterator[LocalState]:
    """A stack whose streams last long enough that none ends as planned while a test opens several."""
    with running_local_stack(
        tmp_path_factory.mktemp("sse-long"),
        "--sse-max-stream-seconds",
        "120",
        "--sse-heartbeat-seconds",
        str(HEARTBEAT_SECONDS),
    ) as state:
        yield state


@pytest.mark.connections
def test_a_subject_at_its_cap_gets_its_newest_stream_and_its_oldest_ends_as_replaced(long_streams):
    """A client's leaving may never reach its stream behind Lambda, so streams a user left must not
    lock them out: one stream more than the cap opens, the oldest ends with `replaced` at its next
    heartbeat (with the cursor so far, as every end), and the others stay open."""
    stack, limit = long_streams, load("dev").sse.max_streams_per_subject
    token = issue(stack, "viewer", "reloader")
    received: list[list[ServerSentEvent]] = [[] for _ in range(limit + 1)]

    def beats(index: int) -> int:
        return sum(1 for sse in received[index] if sse.event == "heartbeat")

    async def listen(client: httpx.AsyncClient, index: int) -> None:
        async with aconnect_sse(client, "GET", url(stack), params={"token": token}) as source:
            assert source.response.status_code == 200, await source.response.aread()
            async for sse in source.aiter_sse():
                if sse.data:  # not a comment-only block
                    received[index].append(sse)
                if sse.event == "end":
                    return

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=limit + 5)
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=60), limits=limits) as client,
            asyncio.TaskGroup() as group,
        ):
            streams = [group.create_task(listen(client, 0))]
            # Its second heartbeat: the first lease is a heartbeat interval old (so it may be replaced)
            # and expires a second before any other (so it is the oldest).
            await until(lambda: beats(0) >= 2)
            for index in range(1, limit + 1):
                streams.append(group.create_task(listen(client, index)))
                await until(lambda index=index: beats(index) >= 1)
            await until(streams[0].done)
            going_on = [beats(index) for index in range(limit + 1)]
            await until(lambda: all(beats(i) > going_on[i] for i in range(1, limit + 1)))
            for stream in streams[1:]:
                stream.cancel()

    asyncio.run(scenario())
    first, *others = received
    end = first[-1]
    assert (end.event, json.loads(end.data)) == ("end", {"reconnect": True, "reason": "replaced"})
    assert end.id == first[-2].id  # the cursor so far: a resume from it loses nothing
    assert not [sse for stream in others for sse in stream if sse.event == "end"]
    log = stack.directory / "stack.log"
    deadline, closed = time.monotonic() + 30, []
    while not closed and time.monotonic() < deadline:
        lines = [json.loads(line) for line in log.read_text().splitlines() if '"sse stream closed"' in line]
        closed = [entry["how"] for entry in lines if entry.get("subject") == "reloader"]
        time.sleep(0.1)
    assert closed[:1] == ["replaced"]


@pytest.mark.connections
def test_browsers_get_the_function_urls_cors_from_the_construct_s_one_definition(stack):
    """The local SSE endpoint answers browsers as the deployed Function URL does: preflight answered
    from `sse_cors()`, Access-Control-Allow-Origin on streams and on refusals for an allowed origin,
    nothing for any other."""
    cors = load("dev").sse_cors()
    allowed, foreign = cors.allowed_origins[0], "https://evil.example"
    preflight = httpx.options(
        url(stack),
        headers={
            "Origin": allowed,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,last-event-id",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed
    assert set(preflight.headers["access-control-allow-methods"].replace(" ", "").split(",")) == set(
        cors.allowed_methods
    )
    assert {
        h.lower() for h in preflight.headers["access-control-allow-headers"].replace(" ", "").split(",")
    } >= {h.lower() for h in cors.allowed_headers}
    assert preflight.headers["access-control-max-age"] == str(cors.max_age_seconds)

    token = issue(stack, "viewer", "browser")
    with httpx.stream(
        "GET", url(stack), params={"token": token}, headers={"Origin": allowed}, timeout=10
    ) as ok:
        assert (ok.status_code, ok.headers["access-control-allow-origin"]) == (200, allowed)
    refused = httpx.get(url(stack), params={"token": "not-a-token"}, headers={"Origin": allowed}, timeout=10)
    assert (refused.status_code, refused.headers["access-control-allow-origin"]) == (401, allowed)
    assert refused.json()["error"]["code"] == "invalid_token"
    stranger = httpx.get(url(stack), params={"token": token}, headers={"Origin": foreign}, timeout=10)
    assert stranger.status_code == 403 and "access-control-allow-origin" not in stranger.headers
