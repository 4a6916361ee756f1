"""The Python subscriber (clients/subscriber.py) against the local stack: connections cut by the
server and ended as planned while publishers publish; the application gets every event exactly once,
in order, on either transport; a WebSocket that cannot connect falls back to SSE; a refused token is
replaced; and a subscriber that cannot connect at all ends in `failed` and says so."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from clients.backoff import Backoff
from clients.subscriber import Endpoints, Subscriber, SubscriberFailed
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from tests.chaos import server_side
from tests.conftest import signal
from tests.integration.conftest import connection_ids, running_local_stack, until

pytestmark = [pytest.mark.integration, pytest.mark.reconnect, pytest.mark.xdist_group("local-stack")]
TYPES = {"signal.created"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("subscriber"), "--sse-max-stream-seconds", "5") as state:
        yield state


def endpoints(stack: LocalState) -> Endpoints:
    return Endpoints.from_file(stack.endpoints_file)


def closed_port_url(scheme: str) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}/"


async def receive(subscriber: Subscriber, count: int, seconds: float = 60) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def take() -> None:
        async for event in subscriber:
            got.append(event)
            if len(got) >= count:
                return

    await asyncio.wait_for(take(), seconds)
    return got


async def publish_in_rounds(stack: LocalState, rounds: int, between: Any = None) -> list[str]:
    published: list[str] = []
    for _ in range(rounds):
        batch = [signal() for _ in range(3)]
        await asyncio.to_thread(local_client(stack).publish, batch)
        published += [e["id"] for e in batch]
        if between is not None:
            await between()
        await asyncio.sleep(0.3)
    return published


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_every_event_once_in_order_across_cuts_and_planned_ends(stack, transport):
    management = server_side(stack)

    async def scenario() -> tuple[list[str], list[dict[str, Any]], Subscriber]:
        subscriber = Subscriber(
            endpoints(stack),
            lambda: issue(stack, "viewer", "lib"),
            TYPES,
            transport=transport,
            ping_seconds=1,
        )
        async with subscriber:
            await until(lambda: subscriber.started)  # subscribed: every event from now on arrives

            async def cut() -> None:  # the server closes the connection (WebSocket); SSE ends as planned
                if transport == "websocket":
                    for connection_id in await asyncio.to_thread(connection_ids, stack):
                        await asyncio.to_thread(management.delete, connection_id)

            published = await publish_in_rounds(stack, 20, cut)
            got = await receive(subscriber, len(published))
            return published, got, subscriber

    published, got, subscriber = asyncio.run(scenario())
    assert [e["id"] for e in got] == published
    assert subscriber.connections >= 2  # it was cut (or ended as planned) and came back
    figures = (len(published), subscriber.connections, subscriber.ordering.repeats, subscriber.gap_replays)
    print(f"{transport}: %d events, %d connections, %d repeats suppressed, %d gap repairs" % figures)


def test_planned_reconnects_before_the_token_expires_hand_over_without_a_break(stack):
    """Tokens that live 8 s: the subscriber opens the next connection before each expires and closes
    the old one once the new one has caught up; the application never sees a reconnect, a loss or a
    repeat."""
    states: list[str] = []

    async def scenario() -> tuple[list[str], list[dict[str, Any]], Subscriber]:
        subscriber = Subscriber(
            endpoints(stack),
            lambda: issue(stack, "viewer", "renewing", ttl_seconds=8),
            TYPES,
            transport="websocket",
            on_state=states.append,
        )
        async with subscriber:
            await until(lambda: subscriber.started)  # subscribed: every event from now on arrives
            published: list[str] = []
            deadline = time.monotonic() + 90
            while subscriber.planned_reconnects < 2:
                assert time.monotonic() < deadline, "no two planned reconnects within 90 s"
                published += await publish_in_rounds(stack, 2)
            published += await publish_in_rounds(stack, 2)
            return published, await receive(subscriber, len(published)), subscriber

    published, got, subscriber = asyncio.run(scenario())
    assert [e["id"] for e in got] == published
    assert states == ["connecting", "open", "closed"]  # never reconnecting
    print(
        f"make before break: {len(published)} events, {subscriber.planned_reconnects} planned reconnects,"
        f" {subscriber.ordering.repeats} repeats suppressed"
    )


def test_the_last_events_come_first_then_live_ones_exactly_once(stack):
    async def scenario() -> tuple[list[str], list[str], list[dict[str, Any]]]:
        earlier = await publish_in_rounds(stack, 2)  # 6 events; the newest 4 are the history
        subscriber = Subscriber(endpoints(stack), lambda: issue(stack, "viewer", "history"), TYPES, last=4)
        async with subscriber:
            history = await receive(subscriber, 4)
            await until(lambda: subscriber.drift.offset_seconds is not None)  # pinged at once, not in 60 s
            later = await publish_in_rounds(stack, 2)
            return earlier, later, history + await receive(subscriber, len(later))

    earlier, later, got = asyncio.run(scenario())
    assert [e["id"] for e in got] == earlier[-4:] + later


def test_a_websocket_that_cannot_connect_falls_back_to_sse(stack):
    unreachable = Endpoints(closed_port_url("ws"), endpoints(stack).sse_url)

    async def scenario() -> tuple[list[str], list[dict[str, Any]], str | None]:
        subscriber = Subscriber(
            unreachable,
            lambda: issue(stack, "viewer", "fallback"),
            TYPES,
            backoff=Backoff(base_seconds=0.05),
        )
        async with subscriber:
            await until(lambda: subscriber.started and subscriber.current_transport == "sse")
            published = await publish_in_rounds(stack, 2)
            return published, await receive(subscriber, len(published)), subscriber.current_transport

    published, got, transport = asyncio.run(scenario())
    assert transport == "sse" and [e["id"] for e in got] == published


def test_a_refused_token_is_replaced_by_a_new_one(stack):
    handed: list[str] = []

    def tokens() -> str:
        handed.append("bad" if not handed else issue(stack, "viewer", "renewed"))
        return handed[-1]

    async def scenario() -> list[str]:
        states: list[str] = []
        subscriber = Subscriber(
            endpoints(stack), tokens, TYPES, backoff=Backoff(base_seconds=0.05), on_state=states.append
        )
        async with subscriber:
            await until(lambda: subscriber.state == "open")
        return states

    states = asyncio.run(scenario())
    assert handed[0] == "bad" and len(handed) >= 2
    assert states[:3] == ["connecting", "reconnecting", "open"]


def test_a_subscriber_that_cannot_connect_ends_failed_and_says_so():
    nowhere = Endpoints(closed_port_url("ws"), closed_port_url("http") + "events")

    async def scenario() -> list[str]:
        states: list[str] = []
        subscriber = Subscriber(
            nowhere,
            lambda: "t",
            TYPES,
            backoff=Backoff(base_seconds=0.01, max_attempts=4),
            on_state=states.append,
        )
        async with subscriber:
            with pytest.raises(SubscriberFailed):
                await receive(subscriber, 1, seconds=30)
        return states

    states = asyncio.run(scenario())
    assert states == ["connecting", "offline", "failed", "closed"]  # nothing reachable: not reconnecting


def test_the_tail_cli_prints_states_and_events_as_json_lines(stack):
    import json
    import subprocess
    import sys
    import threading

    command = ["-m", "clients.tail", "--state-dir", str(stack.directory), "--role", "viewer"]
    command += ["--types", "signal.created", "--json"]
    process = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, process.kill)  # a read below never waits longer than this
    watchdog.start()
    try:
        assert process.stdout is not None
        lines = iter(process.stdout.readline, "")
        assert json.loads(next(lines)) == {"kind": "state", "detail": "connecting"}
        assert json.loads(next(lines)) == {"kind": "state", "detail": "open"}
        time.sleep(0.5)  # subscribed
        published = signal()
        local_client(stack).publish(published)
        event = json.loads(next(lines))
        assert (event["kind"], event["event"]["id"]) == ("event", published["id"])
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(timeout=10)
