"""The local WebSocket gateway going down and coming back, with Python subscribers on both transports
and events published while it is down. Stopped (`POST /local/gateway/stop`, then `/start`), it closes
its connections with 1012 and runs `$disconnect` for each; killed (SIGKILL, then `/start`), it runs
nothing, as when API Gateway's best-effort `$disconnect` is lost. Either way WebSocket subscribers
reconnect with backoff and resume from their cursor, so every event arrives once and in order; SSE,
which does not go through the gateway, is not touched; the dead connections' records are purged (by
`$disconnect`, or by the fan-out's first post after the restart, answered 410 Gone); and a metric
counts it (Disconnects unplanned, or ConnectionsGone), besides the connections opened again."""

from __future__ import annotations

import asyncio
import os
import signal as signals
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from clients.backoff import Backoff
from clients.subscriber import CONNECTING, OFFLINE, OPEN, RECONNECTING, Endpoints, Subscriber
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from tests.conftest import signal
from tests.integration.conftest import connection_ids, outputs, running_local_stack, until
from tests.integration.test_local_metrics import reaches, scrape

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("local-stack")]
TYPES = {"signal.created"}
TIMEOUT = 120  # generous: a loaded machine restarts the gateway process slowly


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("gateway-restart")) as state:
        yield state


def switch_gateway(stack: LocalState, action: str) -> None:
    tools = outputs(stack)["LivePageUrl"].removesuffix("live/")
    assert httpx.post(f"{tools}local/gateway/{action}", timeout=TIMEOUT).json() == {
        "running": action == "start"
    }


def kill_gateway(stack: LocalState) -> None:
    """SIGKILL the stack's gateway process (the one serving its WebSocket port), as a crash would."""
    serving = f"127.0.0.1:{urlsplit(outputs(stack)['WebSocketUrl']).port}".encode()
    for process in Path("/proc").iterdir():
        if process.name.isdigit():
            try:
                arguments = (process / "cmdline").read_bytes().split(b"\0")
            except OSError:  # ended meanwhile
                continue
            if b"local.gateway" in arguments and serving in arguments:
                os.kill(int(process.name), signals.SIGKILL)
                return
    raise AssertionError("no gateway process found")


GO_DOWN = {"stop": lambda stack: switch_gateway(stack, "stop"), "kill": kill_gateway}
# What counts the connections the outage ended: their `$disconnect` (1012, unplanned), or, with none,
# the fan-out's 410 from the restarted gateway.
COUNTED_BY = {
    "stop": 'streaming_disconnects_total{kind="unplanned",transport="websocket"}',
    "kill": "streaming_connections_gone_total",
}


async def publish(stack: LocalState, count: int) -> list[str]:
    events = [signal() for _ in range(count)]
    await asyncio.to_thread(local_client(stack).publish, events)
    return [event["id"] for event in events]


async def received_until(subscriber: Subscriber, last_id: str) -> list[str]:
    """What the application is handed, up to and including `last_id`."""
    got: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in subscriber:
            got.append(event["id"])
            if event["id"] == last_id:
                return got
    return got


@pytest.mark.parametrize("down", ["stop", "kill"])
def test_subscribers_ride_a_gateway_restart_and_the_dead_connections_are_purged(stack, down):
    states: list[str] = []
    before = scrape(stack)

    def subscriber(transport: str, **options: Any) -> Subscriber:
        return Subscriber(
            Endpoints.from_file(stack.endpoints_file),
            lambda: issue(stack, "viewer", f"restart-{transport}"),
            TYPES,
            transport=transport,
            # Retries every second or so, for as long as a loaded machine takes to restart the gateway.
            backoff=Backoff(base_seconds=0.5, cap_seconds=2, max_attempts=200),
            **options,
        )

    async def scenario() -> tuple[list[str], dict[str, list[str]], Subscriber, Subscriber, list[str]]:
        async with subscriber("websocket", on_state=states.append) as ws, subscriber("sse") as sse:
            await until(lambda: ws.started and sse.started, TIMEOUT)
            before_ids = await asyncio.to_thread(connection_ids, stack)
            published = await publish(stack, 3)
            got = {"websocket": await received_until(ws, published[-1])}
            got["sse"] = await received_until(sse, published[-1])

            await asyncio.to_thread(GO_DOWN[down], stack)
            await until(lambda: ws.state in (RECONNECTING, OFFLINE), TIMEOUT)
            published += await publish(stack, 5)  # while it is down
            await asyncio.to_thread(switch_gateway, stack, "start")
            await until(lambda: ws.state == OPEN, TIMEOUT)
            published += await publish(stack, 2)
            got["websocket"] += await received_until(ws, published[-1])
            got["sse"] += await received_until(sse, published[-1])
            await until(lambda: not set(before_ids) & set(connection_ids(stack)), TIMEOUT)
            return published, got, ws, sse, before_ids

    published, got, ws, sse, before_ids = asyncio.run(scenario())
    assert got == {"websocket": published, "sse": published}  # each once, in order
    assert ws.connections >= 2 and ws.backoff.attempts >= 1  # it reconnected, after backing off
    assert states[:2] == [CONNECTING, OPEN] and {RECONNECTING, OFFLINE} & set(states)
    assert sse.connections == 1  # SSE does not go through the gateway
    assert before_ids  # there were connection records, and they are gone (above)
    reopened = 'streaming_connections_opened_total{role="viewer",transport="websocket"}'
    grown = {series: before.get(series, 0) + more for series, more in ((COUNTED_BY[down], 1), (reopened, 2))}
    counted = reaches(stack, grown)  # the module's stack has counted the other tests' too
    short = {series: counted.get(series) for series, least in grown.items() if counted.get(series, 0) < least}
    assert short == {}, before
    print(
        f"gateway {down}: {len(published)} events (5 while down), websocket {ws.connections} connections,"
        f" {ws.ordering.repeats} repeats suppressed, {ws.gap_replays} gap repairs; sse {sse.connections}"
    )
