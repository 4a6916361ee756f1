"""The probe's run with in-memory transports: it publishes only once every transport is ready, times
each arrival from the publish, counts only its own event, bounds every wait and closes what it opened.
Against the local stack: tests/integration/test_probe.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from streaming.constants import PROBE_COMPONENT, PROBE_EVENT_TYPE
from streaming.probe import ProbeResult, probe, status_event


class FakeTransport:
    """A subscription that becomes ready when told to and delivers what the publish hands it."""

    def __init__(self, *, ready: bool = True, delivers: bool = True, others_first: int = 0) -> None:
        self.ready, self.delivers, self.others_first = ready, delivers, others_first
        self.inbox: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        self.opened = self.closed = False
        self.ready_at_publish: bool | None = None

    @asynccontextmanager
    async def listen(self) -> AsyncIterator[AsyncIterator[Mapping[str, Any]]]:
        self.opened = True
        try:
            if not self.ready:
                await asyncio.sleep(3600)  # never subscribes
            yield self._events()
        finally:
            self.closed = True

    async def _events(self) -> AsyncIterator[Mapping[str, Any]]:
        while True:
            yield await self.inbox.get()

    def deliver(self, event: Mapping[str, Any]) -> None:
        for n in range(self.others_first):
            self.inbox.put_nowait({**event, "id": f"another-{n}"})
        if self.delivers:
            self.inbox.put_nowait(event)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.25  # each reading a quarter second later
        return self.now


def run_probe(transports: dict[str, FakeTransport], *, fail_publish: bool = False) -> ProbeResult:
    async def scenario() -> ProbeResult:
        loop = asyncio.get_running_loop()

        def publish(event: Mapping[str, Any]) -> None:
            for transport in transports.values():
                transport.ready_at_publish = transport.opened
                loop.call_soon_threadsafe(transport.deliver, event)
            if fail_publish:
                raise OSError("connection reset")

        listeners = {name: transport.listen for name, transport in transports.items()}
        return await probe(listeners, publish, clock=Clock(), ready_seconds=0.5, receive_seconds=0.5)

    return asyncio.run(scenario())


def test_the_event_is_published_once_both_are_ready_and_timed_from_the_publish():
    transports = {"websocket": FakeTransport(), "sse": FakeTransport(others_first=3)}
    result = run_probe(transports)
    assert result.published and result.publish_reason is None
    # One clock reading at the publish, one at each arrival: 250 ms and 500 ms later.
    assert sorted(arrival.latency_ms or 0 for arrival in result.arrivals) == [250.0, 500.0]
    assert all(arrival.received for arrival in result.arrivals)
    assert all(t.ready_at_publish and t.closed for t in transports.values())


def test_a_transport_that_never_gets_ready_fails_alone_and_is_closed():
    transports = {"websocket": FakeTransport(ready=False), "sse": FakeTransport()}
    result = run_probe(transports)
    arrivals = {arrival.transport: arrival for arrival in result.arrivals}
    assert (arrivals["websocket"].received, arrivals["websocket"].reason) == (
        False,
        "not ready: TimeoutError",
    )
    assert arrivals["websocket"].latency_ms is None
    assert arrivals["sse"].received
    assert all(t.closed for t in transports.values())


def test_an_event_that_does_not_come_is_a_failure_after_the_bounded_wait():
    transports = {"websocket": FakeTransport(delivers=False, others_first=2), "sse": FakeTransport()}
    result = run_probe(transports)
    arrivals = {arrival.transport: arrival for arrival in result.arrivals}
    assert arrivals["websocket"].reason == "the event did not arrive within 0.5 s"
    assert arrivals["sse"].received


def test_a_failed_publish_is_reported_and_an_event_that_arrives_anyway_still_counts():
    result = run_probe({"websocket": FakeTransport(), "sse": FakeTransport()}, fail_publish=True)
    assert (result.published, result.publish_reason) == (False, "OSError: connection reset")
    assert all(arrival.received for arrival in result.arrivals)


def test_the_metrics_say_success_and_latency_per_transport_and_publish_success(capsys):
    run_probe({"websocket": FakeTransport(), "sse": FakeTransport(delivers=False)}).record()
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    emitted = {
        (name, document.get("transport")): document[name][0]
        for document in documents
        for name in ("ProbeSuccess", "ProbeLatency")
        if name in document
    }
    assert emitted == {
        ("ProbeSuccess", "websocket"): 1,
        ("ProbeLatency", "websocket"): 250.0,
        ("ProbeSuccess", "sse"): 0,
    }
    [latency] = [document for document in documents if "ProbeLatency" in document]
    assert latency["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "ProbeLatency", "Unit": "Milliseconds"}
    ]


def test_the_status_event_is_a_valid_system_status_of_the_probe(settings):
    event = status_event("0192f1c4-8d2e-7a51-9c3b-000000000044", datetime(2026, 11, 27, 8, 5, tzinfo=UTC))
    assert event["type"] == PROBE_EVENT_TYPE
    assert (event["data"]["component"], event["data"]["status"]) == (PROBE_COMPONENT, "ok")
    assert event["data"]["checked_at"] == "2026-11-27T08:05:00.000Z"
    settings.catalog.validate_data(PROBE_EVENT_TYPE, 1, event["data"])
