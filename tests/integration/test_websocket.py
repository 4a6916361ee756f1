"""The WebSocket API end to end on the local stack: real `websockets` clients, the deployed handlers
behind the local gateway, publishing through the SigV4 publish endpoint. What a deployed stack is
checked for as well (a replay by cursor after a reconnect) is in tests/contract."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import boto3
import jwt
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from streaming import cursor as cursors
from streaming.codec import GZIP, decode_event
from streaming.connections import ConnectionRegistry
from tests.conftest import example, new_id, signal
from tests.integration.conftest import outputs, running_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]
CHUNK = 10  # the fan-out hands audiences above this to the worker function
T = TypeVar("T")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(
        tmp_path_factory.mktemp("ws"), "--fanout-chunk-connections", str(CHUNK)
    ) as state:
        yield state


def run(coroutine: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, 60))


class Client:
    """A test client speaking docs/protocol.md; keeps what it has not consumed yet."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] | None = None

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        if self.pending:
            return self.pending.pop(0)
        message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if message["type"] == "welcome":
            self.welcome = message
            return await self.next(timeout)
        return message  # type: ignore[no-any-return]

    async def answer(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next message of `kind`; others stay pending in order."""
        skipped: list[dict[str, Any]] = []
        while True:
            message = await self.next(timeout)
            if message["type"] == kind or (message["type"] == "error" and kind != "events"):
                self.pending[:0] = skipped
                return message
            skipped.append(message)

    async def subscribe(self, *types: str) -> dict[str, Any]:
        await self.send(action="subscribe", types=list(types))
        return await self.answer("subscribed")

    async def drain(self) -> list[dict[str, Any]]:
        """Every message before the answer to a ping sent now. A publish returns after its fan-out
        has posted, so everything it delivers to this client is in this list."""
        await self.send(action="ping", id="drain")
        messages = []
        while (message := await self.next())["type"] != "pong":
            messages.append(message)
        return messages

    @property
    def connection_id(self) -> str:
        assert self.welcome is not None
        return str(self.welcome["connection_id"])


async def connect(
    stack: LocalState,
    role: str = "admin",
    *,
    token: str | None = None,
    via: str = "subprotocol",
    origin: str | None = None,
) -> Client:
    token = token if token is not None else issue(stack, role, f"{role}-{new_id()[:8]}")
    url = outputs(stack)["WebSocketUrl"]
    options: dict[str, Any] = {"origin": origin} if origin else {}
    if via == "subprotocol":
        options["subprotocols"] = ["streaming.v1", f"token.{token}"]
    elif via == "header":
        options["additional_headers"] = {"Authorization": f"Bearer {token}"}
    else:
        url += f"?token={token}"
    return Client(await websockets.connect(url, **options))


def publish(stack: LocalState, events: Any) -> Any:
    return local_client(stack).publish(events)


def events_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for m in messages if m["type"] == "events" for event in m["events"]]


def forged(stack: LocalState, **claims: Any) -> str:
    config = load("dev")
    now = int(time.time())
    body = {
        "iss": config.auth.issuer,
        "aud": config.auth.audience,
        "sub": "mallory",
        "role": "admin",
        "iat": now,
        "exp": now + 600,
    }
    secret = claims.pop("secret", stack.jwt_secret())
    return jwt.encode({**body, **claims}, secret, algorithm="HS256")


# -- connecting ---------------------------------------------------------------------------------------


@pytest.mark.connections
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no token", "no token"),
        ("bad signature", "bad signature"),
        ("expired", "token expired"),
        ("wrong audience", "wrong audience"),
        ("foreign origin", "origin not allowed"),
        ("unknown role", "role claim"),
    ],
)
def test_connections_without_a_valid_token_and_origin_are_refused_and_audited(stack, case, reason):
    token = {
        "no token": "",
        "bad signature": forged(stack, secret="not-the-local-secret-but-long-enough-for-hs256"),
        "expired": forged(stack, exp=int(time.time()) - 120),
        "wrong audience": forged(stack, aud="another-service"),
        "foreign origin": forged(stack),
        "unknown role": forged(stack, role="superuser"),
    }[case]
    origin = "https://evil.example" if case == "foreign origin" else "http://localhost:8000"
    with pytest.raises(InvalidStatus) as refused:
        run(connect(stack, token=token, origin=origin))
    assert refused.value.response.status_code == 403
    log = (stack.directory / "stack.log").read_text()
    audited = [json.loads(line) for line in log.splitlines() if '"connection refused"' in line]
    assert any(entry["reason"].startswith(reason) for entry in audited)
    if token:
        assert token not in log


@pytest.mark.connections
@pytest.mark.parametrize(("seconds_left", "accepted"), [(-30, False), (-5, False), (2, False), (15, True)])
def test_expiry_is_strict_a_token_needs_three_seconds_left_at_the_handshake(stack, seconds_left, accepted):
    """The same rule as SSE (test_sse.py): no leeway past `exp`, and under 3 s left is expired."""
    token = forged(stack, exp=int(time.time()) + seconds_left)

    async def scenario() -> str:
        client = await connect(stack, token=token)
        await client.send(action="ping")
        return (await client.answer("pong"))["type"]

    if accepted:
        assert run(scenario()) == "pong"
    else:
        with pytest.raises(InvalidStatus) as refused:
            run(scenario())
        assert refused.value.response.status_code == 403


@pytest.mark.connections
@pytest.mark.parametrize("via", ["subprotocol", "header", "query"])
def test_a_token_is_accepted_from_each_place_and_the_first_message_is_greeted(stack, via):
    token = issue(stack, "analyst", f"carol-{via}")

    async def scenario() -> tuple[Client, dict[str, Any]]:
        client = await connect(stack, token=token, via=via, origin="http://localhost:8000")
        await client.send(action="ping", id="p1")
        pong = await client.answer("pong")
        await client.ws.close()
        return client, pong

    client, pong = run(scenario())
    assert client.welcome is not None
    assert client.welcome["role"] == "analyst"
    assert set(client.welcome["allowed_types"]) == set(load("dev").roles["analyst"])
    assert set(client.welcome["heads"]) == {"market", "ops"}  # an analyst does not see risk
    assert (pong["id"], set(pong["heads"])) == ("p1", {"market", "ops"})
    assert client.ws.subprotocol == ("streaming.v1" if via == "subprotocol" else None)
    assert token not in (stack.directory / "stack.log").read_text()


# -- delivery -----------------------------------------------------------------------------------------


@pytest.mark.events
@pytest.mark.connections
def test_every_role_receives_exactly_the_types_it_may_see_and_subscribed_to(stack, settings):
    roles = load("dev").roles
    all_types = sorted(settings.streams_by_type)

    async def scenario() -> dict[str, list[str]]:
        clients = {role: await connect(stack, role) for role in roles}
        answers = {role: await client.subscribe(*all_types) for role, client in clients.items()}
        for role, answer in answers.items():
            assert set(answer["types"]) == set(roles[role])
            assert set(answer["denied"]) == set(all_types) - set(roles[role])
        narrow = await connect(stack, "admin")
        await narrow.subscribe("risk.alert", "signal.created")
        clients["admin (two types)"] = narrow
        await asyncio.to_thread(publish, stack, [example(t, settings) for t in all_types])
        received = {role: events_of(await client.drain()) for role, client in clients.items()}
        for client in clients.values():
            await client.ws.close()
        return {role: [event["type"] for event in events] for role, events in received.items()}

    received = run(scenario())
    for role, types in roles.items():
        assert sorted(received[role]) == sorted(types), role
    assert sorted(received["admin (two types)"]) == ["risk.alert", "signal.created"]


@pytest.mark.reconnect
@pytest.mark.events
def test_prev_is_the_previous_event_among_all_the_types_a_connection_receives(stack, settings):
    """A subscriber to two types of a stream must learn from `prev` that an event of the other type
    came between; a type its role may not see is not looked at, and a replay naming one is refused."""

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        client = await connect(stack, "viewer")
        await client.subscribe("signal.created", "proposal.updated")
        for event in (signal(), example("decision.made", settings), example("proposal.updated", settings)):
            await asyncio.to_thread(publish, stack, event)  # one publish each, as separate producers do
        await asyncio.to_thread(publish, stack, signal())
        live = events_of(await client.drain())
        start = cursors.encode({"market": live[0]["seq"] - 1})
        await client.send(action="replay", cursor=start, id="again")
        replayed = []
        while (message := await client.next())["type"] != "replay":
            replayed += message["events"]
        await client.send(action="replay", cursor=start, types=["decision.made"], id="forbidden")
        refused = await client.answer("error")
        await client.ws.close()
        return live, replayed, refused

    live, replayed, refused = run(scenario())
    first, update, last = live
    assert (update["type"], last["type"]) == ("proposal.updated", "signal.created")
    assert update["prev"] == first["seq"]  # the decision.made between is not the viewer's
    assert last["prev"] == update["seq"]  # a per-type prev would say first["seq"]
    assert [(e["seq"], e["prev"]) for e in replayed] == [(e["seq"], e["prev"]) for e in live]
    assert (refused["code"], refused["id"]) == ("type_not_allowed", "forbidden")


@pytest.mark.batching
@pytest.mark.events
def test_a_burst_of_50_events_arrives_in_fewer_frames_complete_and_in_order(stack):
    async def scenario() -> tuple[list[dict[str, Any]], list[str]]:
        client = await connect(stack, "analyst")
        await client.subscribe("signal.created")
        burst = [signal() for _ in range(50)]
        await asyncio.to_thread(publish, stack, burst)
        frames = [m for m in await client.drain() if m["type"] == "events"]
        await client.ws.close()
        return frames, [e["id"] for e in burst]

    frames, published = run(scenario())
    received = events_of(frames)
    assert [e["id"] for e in received] == published
    assert [e["seq"] for e in received] == sorted(e["seq"] for e in received)
    assert 1 <= len(frames) < 50
    assert all(len(json.dumps(frame).encode()) <= 32 * 1024 for frame in frames)
    assert [e["prev"] for e in received[1:]] == [e["seq"] for e in received[:-1]]  # a complete run


@pytest.mark.events
def test_a_large_payload_arrives_compressed_and_flagged(stack, settings):
    event = example("proposal.updated", settings)
    event["data"]["changes"] = {f"note_{i}": f"revised {i} " * 150 for i in range(8)}  # ~15 KB

    async def scenario() -> list[dict[str, Any]]:
        client = await connect(stack, "analyst")
        await client.subscribe("proposal.updated")
        await asyncio.to_thread(publish, stack, event)
        received = events_of(await client.drain())
        await client.ws.close()
        return received

    [delivered] = run(scenario())
    assert delivered["encoding"] == GZIP and isinstance(delivered["data"], str)
    assert decode_event(delivered)["data"] == event["data"]


@pytest.mark.connections
def test_a_large_audience_is_split_into_chunks_for_the_worker(stack):
    audience = 2 * CHUNK + 5

    event = {**example("proposal.created", load("dev").runtime_settings("t")), "id": new_id()}

    async def scenario() -> list[list[str]]:
        clients = [await connect(stack, "viewer") for _ in range(audience)]
        for client in clients:
            await client.subscribe("proposal.created")
        await asyncio.to_thread(publish, stack, event)
        received = []
        for client in clients:  # worker chunks are asynchronous: wait for the frame itself
            message = await client.answer("events")
            received.append([e["id"] for e in message["events"]])
            await client.ws.close()
        return received

    received = run(scenario())
    assert len(received) == audience
    assert received == [[event["id"]]] * audience
    log = (stack.directory / "stack.log").read_text()
    assert '"chunk delivered"' in log  # the worker function took part


# -- failures and limits --------------------------------------------------------------------------------


@pytest.mark.connections
def test_a_410_removes_the_stale_connection_and_no_other(stack, settings):
    values = outputs(stack)
    dynamodb = boto3.client("dynamodb", endpoint_url=values["AwsEndpointUrl"], region_name=values["Region"])
    registry = ConnectionRegistry(dynamodb, values["ConnectionsTableName"], settings.roles)
    ghost_id = "ghost000000000="
    ghost = registry.connect(ghost_id, "ghost", "viewer", int(time.time()) + 600)
    registry.subscribe(ghost, ["proposal.updated"])  # its $disconnect never came
    assert registry.get(ghost_id) is not None

    async def scenario() -> tuple[list[dict[str, Any]], bool, bool, bool]:
        client = await connect(stack, "viewer")
        await client.subscribe("proposal.updated")
        await asyncio.to_thread(publish, stack, example("proposal.updated", settings))
        received = events_of(await client.drain())
        # While the live connection is still open, its records must be intact.
        live_registered = await asyncio.to_thread(registry.get, client.connection_id) is not None
        subscribers = {s.connection_id for s in registry.subscribers("proposal.updated")}
        await client.ws.close()
        return received, live_registered, client.connection_id in subscribers, ghost_id in subscribers

    received, live_registered, live_subscribed, ghost_subscribed = run(scenario())
    assert [e["type"] for e in received] == ["proposal.updated"]
    assert registry.get(ghost_id) is None and not ghost_subscribed
    assert live_registered and live_subscribed


@pytest.mark.connections
@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("x" * 8193, "message_too_large"),
        ("{not json", "malformed_json"),
        (json.dumps({"action": "dance", "id": "d1"}), "unknown_action"),
        (json.dumps({"types": ["signal.created"]}), "unknown_action"),
        (json.dumps({"action": "subscribe", "types": "signal.created"}), "invalid_message"),
        (json.dumps({"action": "subscribe", "types": ["order.filled"]}), "unknown_type"),
        (json.dumps({"action": "replay", "cursor": "c1.bogus"}), "invalid_cursor"),
        (json.dumps({"action": "ping", "extra": 1}), "invalid_message"),
    ],
)
def test_malformed_or_oversized_messages_get_their_error_code(stack, message, code):
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client = await connect(stack, "analyst")
        await client.ws.send(message)
        error = await client.answer("error")
        await client.send(action="ping", id="still-there")
        pong = await client.answer("pong")
        await client.ws.close()
        return error, pong

    error, pong = run(scenario())
    assert error["code"] == code
    assert pong["id"] == "still-there"  # the connection survives a bad message
    if '"id": "d1"' in message:
        assert error["id"] == "d1"


@pytest.mark.connections
def test_the_rate_limit_answers_rate_limited_and_closes_a_persistent_abuser(stack):
    async def scenario() -> tuple[list[dict[str, Any]], bool]:
        client = await connect(stack, "viewer")
        for i in range(150):
            await client.send(action="ping", id=f"p{i}")
        answers: list[dict[str, Any]] = []
        closed = False
        try:
            while True:
                answers.append(await client.next(timeout=15))
        except ConnectionClosed:
            closed = True
        except TimeoutError:
            await client.ws.close()
        return answers, closed

    answers, closed = run(scenario())
    limited = [a for a in answers if a["type"] == "error" and a["code"] == "rate_limited"]
    assert limited, "no rate_limited answer"
    assert any(a["type"] == "pong" for a in answers)
    assert closed, "the server did not close a client that kept sending above the rate"


@pytest.mark.connections
def test_a_connection_is_closed_by_the_server_when_its_token_expires(stack):
    token = issue(stack, "viewer", "brief", ttl_seconds=8)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]

    async def scenario() -> tuple[dict[str, Any], float, int | None]:
        client = await connect(stack, "viewer", token=token)
        await client.send(action="ping")
        pong = await client.answer("pong")
        with pytest.raises(ConnectionClosed):
            while True:
                await client.next(timeout=40)
        return pong, time.time(), client.ws.close_code

    pong, closed_at, code = run(scenario())
    assert pong["type"] == "pong"  # it was open and served before its token expired
    assert closed_at >= expires_at and code == 1000  # then the server closed it
