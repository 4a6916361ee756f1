"""What the delivery-side fault tests share: the local stack's fault rules (local.faults), an
application behind a `clients.subscriber.Subscriber`, the store read back through the read API, and
the stack's `/metrics` read as growth since a snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from clients.subscriber import Endpoints, Subscriber
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from tests.conftest import signal
from tests.integration.conftest import connection_ids, outputs, until
from tests.integration.test_local_metrics import scrape

TYPES = frozenset({"signal.created"})
WAIT = 120  # seconds: a shared, loaded 2-core machine


def faults_url(stack: LocalState) -> str:
    gateway = urlsplit(outputs(stack)["WebSocketUrl"])
    return f"http://{gateway.netloc}/local/faults"


def set_fault(stack: LocalState, **rule: Any) -> None:
    response = httpx.post(faults_url(stack), json=rule, timeout=30)
    assert response.status_code == 200, response.text


def answered(stack: LocalState) -> list[int]:
    """How many requests each rule has answered, in the order they were set."""
    return [rule["answered"] for rule in httpx.get(faults_url(stack), timeout=30).json()["rules"]]


def clear_faults(stack: LocalState) -> None:
    assert httpx.delete(faults_url(stack), timeout=30).json() == {"rules": []}


async def publish(stack: LocalState, count: int) -> list[str]:
    """`count` events, one request each (a frame each); their ids."""
    ids = []
    for _ in range(count):
        event = signal()
        await asyncio.to_thread(local_client(stack).publish, event)
        ids.append(event["id"])
    return ids


def stored(stack: LocalState, ids: Iterable[str]) -> list[str]:
    """Which of `ids` the store holds, in the store's order (read back through `GET /events`)."""
    wanted, found, cursor = set(ids), [], None
    while True:
        page = local_client(stack).events_after(cursor, types=sorted(TYPES), limit=1000)
        found += [event["id"] for event in page["events"] if event["id"] in wanted]
        cursor = page["cursor"]
        if not page["more"]:
            return found


class Metrics:
    """The stack's counters as they were when made; `grown` waits until they grew by at least so much."""

    def __init__(self, stack: LocalState) -> None:
        self.stack = stack
        self.before = scrape(stack)

    def growth(self) -> dict[str, float]:
        now = scrape(self.stack)
        return {series: now[series] - self.before.get(series, 0) for series in now}

    async def grown(self, **least: float) -> dict[str, float]:
        """Waits until each named counter (`streaming_<name>_total`) grew by `least`; the growth of all."""
        latest: dict[str, float] = {}

        def reached() -> bool:
            latest.update(self.growth())
            return all(latest.get(f"streaming_{name}_total", 0) >= n for name, n in least.items())

        await until(lambda: reached(), WAIT)
        return latest


def counter(growth: dict[str, float], name: str) -> float:
    return growth.get(f"streaming_{name}_total", 0)


@dataclass
class Application:
    """What the application behind a subscriber received, in order."""

    subscriber: Subscriber
    connection_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [event["id"] for event in self.events]

    async def receives(self, ids: list[str]) -> None:
        await until(lambda: len(self.events) >= len(ids), WAIT)

    def ping_every(self, seconds: float) -> None:
        """Pinging, the subscriber learns the heads (a lost last event); quiet, it sends nothing of
        itself, so the only frames it gets are the ones the stack sends unasked."""
        self.subscriber.ping_seconds = seconds


@contextlib.asynccontextmanager
async def application(stack: LocalState, transport: str = "websocket") -> AsyncIterator[Application]:
    """A subscriber to `TYPES` that replays a gap after a second, quiet (no ping after its first) until
    told to ping; its WebSocket connection's id, once subscribed."""
    before = set(connection_ids(stack))
    subscriber = Subscriber(
        Endpoints.from_file(stack.endpoints_file),
        lambda: issue(stack, "viewer", "faults"),
        TYPES,
        transport=transport,
        ping_seconds=math.inf,
        gap_seconds=1,
    )
    async with subscriber:
        await until(lambda: subscriber.started, WAIT)
        # Registered before `subscribed` was answered: there at once.
        new = [i for i in connection_ids(stack) if i not in before] if transport == "websocket" else [""]
        assert len(new) == 1, new
        app = Application(subscriber, new[0])

        async def take() -> None:
            async for event in subscriber:
                app.events.append(event)

        taking = asyncio.create_task(take())
        try:
            yield app
        finally:
            taking.cancel()
