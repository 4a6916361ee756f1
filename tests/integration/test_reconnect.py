"""The WebSocket's planned reconnect against the local stack, its gateway's limits shortened: a 20 s
connection limit (connections expire one 5 s sweep before it) and an 8 s idle timeout. A connection is
told to `reconnect` before it is closed at its limit, an idle one is closed with 1001 and its
`$disconnect` runs, and the Python subscriber hands over on the notice without losing or repeating an
event."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.typing import Subprotocol

from clients.drift import epoch_seconds
from clients.subscriber import Endpoints, Subscriber
from local.gateway import IDLE_REASON
from local.state import LocalState
from local.token import issue
from tests.integration.conftest import outputs, running_local_stack, until
from tests.integration.test_local_logs import disconnected, wait_for
from tests.integration.test_subscriber import publish_in_rounds, receive

pytestmark = [pytest.mark.integration, pytest.mark.reconnect, pytest.mark.xdist_group("local-stack")]
CONNECTION_LIMIT_SECONDS = 20
IDLE_TIMEOUT_SECONDS = 8
SWEEP_SECONDS = 5
TIMEOUT = 90  # a connection's whole life, many times over


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(
        tmp_path_factory.mktemp("reconnect"),
        "--websocket-connection-limit-seconds",
        str(CONNECTION_LIMIT_SECONDS),
        "--websocket-idle-timeout-seconds",
        str(IDLE_TIMEOUT_SECONDS),
        "--sweep-seconds",
        str(SWEEP_SECONDS),
    ) as state:
        yield state


async def connect(stack: LocalState, subject: str) -> Any:
    ws = await websockets.connect(
        outputs(stack)["WebSocketUrl"],
        subprotocols=[Subprotocol("streaming.v1"), Subprotocol(f"token.{issue(stack, 'viewer', subject)}")],
    )
    await ws.send(json.dumps({"action": "subscribe", "types": ["signal.created"], "id": "s"}))
    return ws


async def messages_until_closed(ws: Any, *, ping_every: float | None) -> tuple[list[dict[str, Any]], int]:
    """Everything the server sends until it closes the connection, and the close code; pinging (which
    keeps the connection out of the idle timeout) every `ping_every` seconds, or never."""
    received: list[dict[str, Any]] = []
    last_ping = time.monotonic()
    async with asyncio.timeout(TIMEOUT):
        while True:
            if ping_every is not None and time.monotonic() - last_ping > ping_every:
                last_ping = time.monotonic()
                await ws.send(json.dumps({"action": "ping", "id": "p"}))
            try:
                async with asyncio.timeout(0.5):
                    received.append(json.loads(await ws.recv()))
            except TimeoutError:
                continue
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None, "closed without a close frame"
                return received, closed.rcvd.code


def test_a_connection_is_told_to_reconnect_before_it_is_closed_at_its_limit(stack):
    async def scenario() -> tuple[list[dict[str, Any]], int]:
        ws = await connect(stack, "limited")
        return await messages_until_closed(ws, ping_every=1)

    received, code = asyncio.run(scenario())
    [welcome] = [m for m in received if m["type"] == "welcome"]
    # Its one-hour token outlives the connection: it expires one sweep before the gateway's cut.
    lifetime = welcome["expires_at"] - epoch_seconds(welcome["server_time"])
    assert lifetime <= CONNECTION_LIMIT_SECONDS - SWEEP_SECONDS
    [notice] = [m for m in received if m["type"] == "reconnect"]
    assert (notice["reason"], notice["at"]) == ("connection_limit", welcome["expires_at"])
    assert epoch_seconds(notice["server_time"]) < notice["at"]  # told before it is closed
    assert received.index(notice) > received.index(welcome)
    # Closed by the sweep (1000) or, had the sweep been late, at the gateway's limit (1001).
    assert code in (1000, 1001)


def test_an_idle_connection_is_closed_with_1001_and_its_disconnect_runs(stack):
    async def scenario() -> tuple[list[dict[str, Any]], int]:
        ws = await connect(stack, "idle")
        return await messages_until_closed(ws, ping_every=None)

    received, code = asyncio.run(scenario())
    assert code == 1001
    [welcome] = [m for m in received if m["type"] == "welcome"]
    [line] = wait_for(lambda: disconnected(stack, welcome["connection_id"]), "its $disconnect")
    assert (line["status"], line["reason"]) == (1001, IDLE_REASON)  # not its connection limit


def test_the_subscriber_hands_over_on_the_notice_without_losing_or_repeating_an_event(stack):
    """The connection lives 15 s and the subscriber's own renewal is set past its end: only the notice
    (halfway) can start the handover, while events are published throughout."""
    states: list[str] = []

    async def scenario() -> tuple[list[str], list[dict[str, Any]], Subscriber]:
        subscriber = Subscriber(
            Endpoints.from_file(stack.endpoints_file),
            lambda: issue(stack, "viewer", "handover"),
            {"signal.created"},
            transport="websocket",
            ping_seconds=1,  # out of the 8 s idle timeout
            renew_before_seconds=-TIMEOUT,  # its own schedule would renew after the connection ended
            on_state=states.append,
        )
        async with subscriber:
            await until(lambda: subscriber.started)  # subscribed: every event from now on arrives
            published: list[str] = []
            deadline = time.monotonic() + TIMEOUT
            while subscriber.planned_reconnects < 1:
                assert time.monotonic() < deadline, f"no planned reconnect within {TIMEOUT} s"
                published += await publish_in_rounds(stack, 1)
            published += await publish_in_rounds(stack, 3)
            return published, await receive(subscriber, len(published), TIMEOUT), subscriber

    published, got, subscriber = asyncio.run(scenario())
    assert [e["id"] for e in got] == published  # every event once, in order
    assert states == ["connecting", "open", "closed"]  # never reconnecting
    assert subscriber.connections == subscriber.planned_reconnects + 1  # every new connection a handover
    print(
        f"handover on notice: {len(published)} events, {subscriber.planned_reconnects} planned reconnects,"
        f" {subscriber.ordering.repeats} repeats suppressed"
    )
