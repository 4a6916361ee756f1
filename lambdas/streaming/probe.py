"""The synthetic probe: one `system.status` event published through the real publish path, and its
arrival timed on each transport a subscriber uses.

A run opens a WebSocket connection (subscribed to the event's type) and an SSE stream (started live),
waits until both are ready, publishes the event and waits, each for a bounded time, until it arrives on
each. It reports per transport whether the event arrived and how long after the publish request left,
and whether the publish itself succeeded. It recognizes its own event by its id, so other events of
the type (or another probe's) do not count. Everything it opened is closed when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from streaming.constants import PROBE_COMPONENT, PROBE_EVENT_TYPE
from streaming.listeners import sse_events, websocket_events
from streaming.observability import count, logger, metrics

WEBSOCKET, SSE = "websocket", "sse"
READY_SECONDS = 10.0  # to connect and subscribe, per transport
RECEIVE_SECONDS = 10.0  # for the event to arrive after the publish request left

# Sends one event through the publish path; raises if it was not accepted.
Publish = Callable[[Mapping[str, Any]], None]
# Opens one transport's subscription to the probe's type; entered once it is ready (every event
# published from then on is delivered), it yields the envelopes that arrive.
Listen = Callable[[], AbstractAsyncContextManager[AsyncIterator[Mapping[str, Any]]]]


@dataclass(frozen=True)
class Arrival:
    transport: str
    received: bool
    latency_ms: float | None = None  # from the publish request leaving to the event's arrival
    reason: str | None = None  # why it did not arrive

    def record(self) -> None:
        count("ProbeSuccess", 1 if self.received else 0, transport=self.transport)
        if self.latency_ms is not None:
            count("ProbeLatency", self.latency_ms, MetricUnit.Milliseconds, transport=self.transport)


@dataclass(frozen=True)
class ProbeResult:
    event_id: str
    published: bool
    publish_reason: str | None
    arrivals: tuple[Arrival, ...]

    def record(self) -> None:
        """As metrics (ProbeSuccess and ProbeLatency by transport, ProbePublishSuccess) and one log line."""
        for arrival in self.arrivals:
            arrival.record()
        metrics.add_metric(
            name="ProbePublishSuccess", unit=MetricUnit.Count, value=1 if self.published else 0
        )
        ok = self.published and all(arrival.received for arrival in self.arrivals)
        (logger.info if ok else logger.warning)("probe", extra=self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "published": self.published,
            "publish_reason": self.publish_reason,
            "transports": {
                a.transport: {"received": a.received, "latency_ms": a.latency_ms, "reason": a.reason}
                for a in self.arrivals
            },
        }


def status_event(event_id: str, checked_at: datetime) -> dict[str, Any]:
    """What admins see once a minute: the streaming service reporting itself ok."""
    return {
        "id": event_id,
        "type": PROBE_EVENT_TYPE,
        "data": {
            "component": PROBE_COMPONENT,
            "status": "ok",
            "message": "Synthetic probe: published to time its delivery over WebSocket and SSE.",
            "checked_at": checked_at.astimezone(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
        },
    }


async def run(
    websocket_url: str,
    sse_url: str,
    token: str,
    publish: Publish,
    *,
    clock: Callable[[], float] = time.monotonic,
    ready_seconds: float = READY_SECONDS,
    receive_seconds: float = RECEIVE_SECONDS,
) -> ProbeResult:
    """One probe over both transports; `sse_url` is the events endpoint (…/events)."""
    listeners = {
        WEBSOCKET: lambda: websocket_events(websocket_url, token, PROBE_EVENT_TYPE),
        SSE: lambda: sse_events(sse_url, token, PROBE_EVENT_TYPE),
    }
    return await probe(
        listeners, publish, clock=clock, ready_seconds=ready_seconds, receive_seconds=receive_seconds
    )


async def probe(
    listeners: Mapping[str, Listen],
    publish: Publish,
    *,
    clock: Callable[[], float] = time.monotonic,
    ready_seconds: float = READY_SECONDS,
    receive_seconds: float = RECEIVE_SECONDS,
) -> ProbeResult:
    event = status_event(str(uuid.uuid4()), datetime.now(UTC))
    sent: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    readiness = {name: asyncio.Event() for name in listeners}
    watches = [
        asyncio.create_task(
            _watch(name, listen, event["id"], readiness[name], sent, clock, ready_seconds, receive_seconds)
        )
        for name, listen in listeners.items()
    ]
    try:
        for ready in readiness.values():  # each is set within ready_seconds, ready or not
            await ready.wait()
        sent.set_result(clock())
        try:
            await asyncio.to_thread(publish, event)
            published, reason = True, None
        except Exception as error:  # refused, unreachable: the transports still wait, the event may be stored
            published, reason = False, _describe(error)
        arrivals = tuple(await asyncio.gather(*watches))
    finally:
        for watch in watches:
            watch.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
    return ProbeResult(event["id"], published, reason, arrivals)


async def _watch(
    transport: str,
    listen: Listen,
    event_id: str,
    ready: asyncio.Event,
    sent: asyncio.Future[float],
    clock: Callable[[], float],
    ready_seconds: float,
    receive_seconds: float,
) -> Arrival:
    async with contextlib.AsyncExitStack() as opened:
        try:
            async with asyncio.timeout(ready_seconds):
                events = await opened.enter_async_context(listen())
        except Exception as error:  # any failure to subscribe is the transport's failure
            return Arrival(transport, False, reason=f"not ready: {_describe(error)}")
        finally:
            ready.set()
        sent_at = await sent
        try:
            async with asyncio.timeout(receive_seconds):
                async for event in events:
                    if event.get("id") == event_id:
                        return Arrival(transport, True, latency_ms=round((clock() - sent_at) * 1000, 1))
            return Arrival(transport, False, reason="the connection ended before the event arrived")
        except TimeoutError:
            return Arrival(transport, False, reason=f"the event did not arrive within {receive_seconds:g} s")
        except Exception as error:
            return Arrival(transport, False, reason=f"broken while waiting: {_describe(error)}")


def _describe(error: BaseException) -> str:
    """Why, for the log: the exception's type and message (no token travels in a URL or message here)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
