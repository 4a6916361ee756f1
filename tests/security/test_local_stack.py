"""The authorization matrix on the local stack: every role against every event type on the WebSocket API
(subscribe, live delivery, replay by cursor and by `last`), on SSE, and on the HTTP read API; origins on
both transports; and, last, every line the stack logged scanned for tokens and key material."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
import websockets
from httpx_sse import connect_sse
from websockets.exceptions import InvalidStatus

from clients.publisher import PublishError
from local.aws import REGION
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from streaming import constants as c
from streaming import cursor as cursors
from streaming.hs256 import SigningKeys
from tests.conftest import example
from tests.integration.conftest import outputs, running_local_stack

pytestmark = [pytest.mark.security, pytest.mark.integration, pytest.mark.xdist_group("local-stack")]

CONFIG = load("dev")
ROLES = CONFIG.roles
TYPES = sorted(CONFIG.event_types)
ALLOWED_ORIGIN = CONFIG.allowed_origins[0]
# What a browser could send that is not an allowed origin, however close.
NEAR_MISSES = [
    "https://evil.example",
    ALLOWED_ORIGIN.replace("http://", "https://"),  # scheme
    ALLOWED_ORIGIN.rsplit(":", 1)[0] + ":8001",  # port
    ALLOWED_ORIGIN.rsplit(":", 1)[0],  # default port
    ALLOWED_ORIGIN + ".evil.example",  # suffix
    "http://evil.example/" + ALLOWED_ORIGIN,
    ALLOWED_ORIGIN.upper(),
    "null",  # sandboxed frames and file: pages
]
MINTED: list[str] = []  # every token this module issued, for the log scan when its stack stops


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    """The module's stack; when its tests are done, whichever ran, every line it logged is scanned."""
    with running_local_stack(tmp_path_factory.mktemp("security")) as state:
        yield state
        scan_log(state)


@pytest.fixture(autouse=True)
def no_secret_in_captured_output(capfd, caplog) -> Iterator[None]:
    """What each test printed or logged (the clients' libraries too) holds no token it minted, no JWT at
    all and no Authorization header; the output is passed on as pytest would show it."""
    yield
    out, err = capfd.readouterr()
    sys.stdout.write(out)
    sys.stderr.write(err)
    captured = out + err + caplog.text
    assert not [minted[:12] for minted in MINTED if minted in captured]
    assert not JWT.search(captured) and not AUTHORIZATION.search(captured)


def token(stack: LocalState, role: str) -> str:
    minted = issue(stack, role, f"security-{role}-{len(MINTED)}")
    MINTED.append(minted)
    return minted


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def publish_one_of_each(stack: LocalState, settings: Any) -> str:
    """Publishes one event of every type; returns the cursor just before them."""
    client = local_client(stack)
    start = cursors.encode(client.streams()["streams"])
    client.publish([example(t, settings) for t in TYPES])
    return start


# -- WebSocket ----------------------------------------------------------------------------------------


class Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def until(self, kind: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The events received before the next message of `kind` (or an error), and that message."""
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] == "events":
                    events += message["events"]
                elif message["type"] in (kind, "error"):
                    return events, message


async def connect(stack: LocalState, role: str, origin: str | None = ALLOWED_ORIGIN) -> Client:
    options: dict[str, Any] = {"origin": origin} if origin else {}
    subprotocols = ["streaming.v1", f"token.{token(stack, role)}"]
    return Client(
        await websockets.connect(outputs(stack)["WebSocketUrl"], subprotocols=subprotocols, **options)
    )


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return sorted(event["type"] for event in events)


def test_websocket_subscribe_live_and_replay_for_every_role_and_type(stack, settings):
    async def scenario() -> dict[str, dict[str, Any]]:
        clients = {role: await connect(stack, role) for role in ROLES}
        seen: dict[str, dict[str, Any]] = {role: {} for role in ROLES}
        for role, client in clients.items():
            await client.send(action="subscribe", types=TYPES)
            _, seen[role]["subscribed"] = await client.until("subscribed")
        start = await asyncio.to_thread(publish_one_of_each, stack, settings)
        for role, client in clients.items():
            await client.send(action="ping", id="drain")
            seen[role]["live"], _ = await client.until("pong")
            await client.send(action="replay", cursor=start, id="cursor")
            seen[role]["by cursor"], _ = await client.until("replay")
            await client.send(action="replay", last=len(TYPES), id="last")
            seen[role]["by last"], _ = await client.until("replay")
            for event_type in TYPES:
                await client.send(action="replay", cursor=start, types=[event_type], id=event_type)
                seen[role][event_type] = await client.until("replay")
            await client.ws.close()
        return seen

    seen = run(scenario())
    for role, allowed in ROLES.items():
        answers = seen[role]
        assert set(answers["subscribed"]["types"]) == set(allowed), role
        assert set(answers["subscribed"]["denied"]) == set(TYPES) - set(allowed), role
        assert types_of(answers["live"]) == sorted(allowed), role
        assert types_of(answers["by cursor"]) == sorted(allowed), role
        assert set(types_of(answers["by last"])) <= set(allowed), role
        for event_type in TYPES:
            events, answer = answers[event_type]
            if event_type in allowed:
                assert (types_of(events), answer["type"]) == ([event_type], "replay"), (role, event_type)
            else:
                assert (events, answer["code"], answer["id"]) == ([], "type_not_allowed", event_type)


# -- SSE ----------------------------------------------------------------------------------------------


def sse_url(stack: LocalState) -> str:
    return outputs(stack)["SseUrl"] + "events"


def sse_types(stack: LocalState, role: str, params: dict[str, str], count: int) -> list[str]:
    """The types of the first `count` events of a stream, or its refusal as (status, code)."""
    headers = {"Authorization": f"Bearer {token(stack, role)}", "Origin": ALLOWED_ORIGIN}
    types: list[str] = []
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=30)) as client,
        connect_sse(client, "GET", sse_url(stack), params=params, headers=headers) as source,
    ):
        if source.response.status_code != 200:
            return [str(source.response.status_code), json.loads(source.response.read())["error"]["code"]]
        for sse in source.iter_sse():
            if sse.data and sse.event not in ("heartbeat", "end", "truncated"):
                types.append(json.loads(sse.data)["type"])
                if len(types) == count:
                    break
    return sorted(types)


def test_sse_streams_each_role_exactly_its_types_and_refuses_every_other(stack, settings):
    start = publish_one_of_each(stack, settings)
    for role, allowed in ROLES.items():
        assert sse_types(stack, role, {"cursor": start}, len(allowed)) == sorted(allowed), role
        for event_type in TYPES:
            answer = sse_types(stack, role, {"cursor": start, "types": event_type}, 1)
            expected = [event_type] if event_type in allowed else ["403", "type_not_allowed"]
            assert answer == expected, (role, event_type)


# -- the HTTP read API --------------------------------------------------------------------------------


def test_the_read_api_narrows_to_each_role(stack, settings):
    """`role` is a view, not an authorization (the read API is IAM-signed, for operators and services):
    a type outside the role's grant is never returned, even when asked for by name."""
    client = local_client(stack)
    start = publish_one_of_each(stack, settings)
    for role, allowed in ROLES.items():
        assert types_of(client.events_after(start, role=role)["events"]) == sorted(allowed), role
        assert types_of(client.events_after(start, role=role, types=TYPES)["events"]) == sorted(allowed)
        latest = client.latest(len(TYPES), role=role)["events"]
        assert latest and set(types_of(latest)) <= set(allowed), role
        for event_type in TYPES:
            expected = [event_type] if event_type in allowed else []
            by_cursor = client.events_after(start, role=role, types=[event_type])["events"]
            latest = client.latest(1, role=role, types=[event_type])["events"]
            assert (types_of(by_cursor), types_of(latest)) == (expected, expected), (role, event_type)
    with pytest.raises(PublishError) as refused:
        client.latest(role="superuser")
    assert (refused.value.status, refused.value.code) == (400, "unknown_role")


# -- origins ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [*CONFIG.allowed_origins, ALLOWED_ORIGIN + "/", None])
def test_allowed_origins_and_clients_without_one_connect_on_both_transports(stack, origin):
    """No Origin: not a browser (servers, tools), authenticated by the token alone. A trailing slash
    names the same origin."""

    async def websocket() -> str:
        client = await connect(stack, "viewer", origin=origin)
        await client.send(action="ping", id="p")
        _, pong = await client.until("pong")
        await client.ws.close()
        return str(pong["type"])

    assert run(websocket()) == "pong"
    assert sse_status(stack, origin) == 200


@pytest.mark.parametrize("origin", NEAR_MISSES)
def test_foreign_and_near_miss_origins_are_refused_on_both_transports(stack, origin):
    with pytest.raises(InvalidStatus) as refused:
        run(connect(stack, "admin", origin=origin))
    assert refused.value.response.status_code == 403
    assert sse_status(stack, origin) == (403, "origin_not_allowed")


def sse_status(stack: LocalState, origin: str | None) -> Any:
    """200 when the stream opens, else (status, code)."""
    headers = {"Authorization": f"Bearer {token(stack, 'viewer')}"} | ({"Origin": origin} if origin else {})
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=30)) as client,
        client.stream(
            "GET", sse_url(stack), params={"types": ROLES["viewer"][0]}, headers=headers
        ) as response,
    ):
        if response.status_code == 200:
            return 200
        return response.status_code, json.loads(response.read())["error"]["code"]


# -- secrets: where the key lives, and what the logs hold (last: it reads what the tests above logged) -


def test_the_local_signing_key_lives_in_the_state_dir_owner_only_and_in_secrets_manager(stack):
    for name in ("jwt-secret", "publisher-credentials.json"):
        assert stat.S_IMODE((stack.directory / name).stat().st_mode) == 0o600, name
    assert keys(stack).keys[keys(stack).current]  # what the handlers read at run time


def keys(stack: LocalState) -> SigningKeys:
    endpoints = outputs(stack)
    secrets = boto3.client(
        "secretsmanager",
        endpoint_url=endpoints["AwsEndpointUrl"],
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    return SigningKeys.parse(
        secrets.get_secret_value(SecretId=endpoints[c.OUTPUT_AUTH_SECRET_ARN])["SecretString"]
    )


JWT = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")
AUTHORIZATION = re.compile(r"authorization\W{1,4}(bearer|aws4)", re.IGNORECASE)


def scan_log(stack: LocalState) -> None:
    """No token minted here, no signing key (the state dir's, and every one in Secrets Manager), no
    publisher secret, no JWT at all and no Authorization header value in any line the stack logged."""
    lines = (stack.directory / "stack.log").read_text().splitlines()
    secrets = {
        *MINTED,
        stack.jwt_secret(),
        *keys(stack).keys.values(),
        keys(stack).dumps(),
        stack.credentials().secret_access_key,
    }
    assert MINTED and lines  # the tests ran, and the stack logged them
    leaks = [(n, secret[:8]) for n, line in enumerate(lines) for secret in secrets if secret in line]
    assert leaks == []
    assert [line for line in lines if JWT.search(line) or AUTHORIZATION.search(line)] == []
    print(f"\nsecurity log scan: {len(lines)} lines, {len(MINTED)} tokens, {len(secrets) - len(MINTED)} keys")


def test_the_log_scan_finds_what_it_looks_for(stack, tmp_path):
    """The scan can fail: a copy of the stack's state with a token and the key in its log does."""
    copy = LocalState(tmp_path)
    for name in ("jwt-secret", "publisher-credentials.json", "endpoints.json"):
        (tmp_path / name).write_text((stack.directory / name).read_text())
    for leak in (token(stack, "viewer"), keys(stack).keys[keys(stack).current], "Authorization: Bearer x"):
        (tmp_path / "stack.log").write_text(f'{{"message": "request", "detail": "{leak}"}}\n')
        with pytest.raises(AssertionError):
            scan_log(copy)
