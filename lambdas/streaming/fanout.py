"""Live delivery right after an event is stored (no DynamoDB Streams on this path).

For the stored events, find the connections subscribed to their types whose role may see them, pack
each connection's events into as few frames as fit, and post them in parallel. A 410 removes exactly
that connection; 429 and 5xx are retried with bounded backoff (a request whose fate is unknown is not:
it could arrive twice); one slow connection holds up one worker, never the others. Audiences larger
than one chunk are split, and every chunk but the first goes to a worker function invoked
asynchronously, so delivery time does not grow with one function's limits. Events for a connection
with posts in flight wait for them and go together in a later frame (streaming.outbox).
"""

from __future__ import annotations

import time
from collections import ChainMap, Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from streaming import coalesce
from streaming.coalesce import Coalescing
from streaming.codec import EncodedKey, encoded_for, first_frame
from streaming.connections import ConnectionRegistry
from streaming.events import Envelope
from streaming.management import GONE, Poster, post_with_retry
from streaming.observability import MAX_METRIC_VALUES, logger, metrics, spread, tracer
from streaming.outbox import POSTS_IN_FLIGHT, Encoded, Outboxes
from streaming.results import Appended

PAYLOAD_VERSION = 2  # of a chunk handed to a worker; 1 had a resume base per connection
_COUNTS = ("connections", "frames", "delivered", "gone", "failed", "retries", "folded", "chunks_dispatched")


@dataclass
class Report:
    connections: int = 0
    frames: int = 0
    delivered: int = 0  # frames accepted
    gone: int = 0  # connections removed after a 410
    failed: int = 0  # frames given up on
    retries: int = 0  # posts repeated after a 429 or 5xx
    folded: int = 0  # events left for a later frame of a post in flight to their connection
    chunks_dispatched: int = 0
    lookup_ms: float = 0.0  # finding the audience
    post_ms: float = 0.0  # posting to it (this function's share)
    # Per connection served: from its oldest event's store time to its last frame's accepted post.
    latencies_ms: list[float] = field(default_factory=list)
    coalesced: Counter[str] = field(default_factory=Counter)  # per type, events superseded, not sent

    def add(self, other: Report) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies_ms += other.latencies_ms
        self.coalesced += other.coalesced

    def record(self) -> None:
        """As metrics, the same from a publish function and a fan-out worker."""
        for name, value in (
            ("FramesDelivered", self.delivered),
            ("FramesFailed", self.failed),
            ("DeliveryRetries", self.retries),
            ("EventsFolded", self.folded),
            ("ConnectionsGone", self.gone),
            ("FanOutChunksDispatched", self.chunks_dispatched),
        ):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        if self.connections:
            metrics.add_metric(name="FanOutLookupTime", unit=MetricUnit.Milliseconds, value=self.lookup_ms)
            metrics.add_metric(name="FanOutPostTime", unit=MetricUnit.Milliseconds, value=self.post_ms)
        for latency in spread(self.latencies_ms, MAX_METRIC_VALUES):
            metrics.add_metric(name="DeliveryLatency", unit=MetricUnit.Milliseconds, value=latency)
        coalesce.record(self.coalesced, transport="websocket")


def stored_at(event: Envelope) -> float:
    """When the event was stored, in epoch seconds (its `ts`, RFC 3339 with `Z`)."""
    return _epoch_seconds(event.ts)


@lru_cache(maxsize=4096)
def _epoch_seconds(ts: str) -> float:
    """Parsed once per event, however many connections it goes to (and however many workers ask)."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@dataclass
class Recipient:
    """One connection and the events it gets from this publish."""

    connection_id: str
    types: frozenset[str]  # everything it subscribes to (each event's `prev` is among these)
    events: list[Envelope] = field(default_factory=list)
    found_by: list[str] = field(default_factory=list)  # the subscriptions it was found by


# A chunk of the audience, handed to a worker: event positions and recipients, JSON-serializable.
Dispatch = Callable[[dict[str, Any]], None]


class FanOut:
    def __init__(
        self,
        registry: ConnectionRegistry,
        poster: Poster,
        *,
        compress_above: int,
        chunk_connections: int,
        dispatch: Dispatch | None = None,
        executor: ThreadPoolExecutor,
        coalescing: Coalescing | None = None,
        posts_in_flight: int | None = POSTS_IN_FLIGHT,  # to a connection, then events wait (None: never)
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._poster = poster
        self._compress_above = compress_above
        self._chunk = chunk_connections
        self._dispatch = dispatch
        self._executor = executor
        self._coalescing = coalescing
        self._outboxes = Outboxes(posts_in_flight)
        self._sleep = sleep
        self._clock = clock

    def deliver(self, events: Sequence[Envelope]) -> Report:
        """Deliver freshly stored events to everyone subscribed who may see them."""
        started = time.perf_counter()
        audience = self.audience(events)
        report = Report(lookup_ms=(time.perf_counter() - started) * 1000)
        recipients = list(audience.values())
        if self._dispatch is not None and len(recipients) > self._chunk:
            for start in range(self._chunk, len(recipients), self._chunk):
                chunk = recipients[start : start + self._chunk]
                try:
                    self._dispatch(chunk_payload(chunk))
                    report.chunks_dispatched += 1
                except Exception:  # that chunk catches up by replay; the others still get theirs
                    logger.exception("fan-out chunk not dispatched", extra={"connections": len(chunk)})
                    report.failed += len(chunk)
            recipients = recipients[: self._chunk]
        sent = self.send(recipients)
        report.add(sent)
        report.post_ms = sent.post_ms
        return report

    @tracer.capture_method(capture_response=False)
    def deliver_stored(self, results: Sequence[Appended]) -> Report:
        """Fan out what a publish stored just now. The events are durable already, so a failure here
        is logged, never raised: subscribers notice it (heads, prev) and catch up by replay."""
        fresh = [result.envelope for result in results if result.envelope is not None]
        if not fresh:
            return Report()
        try:
            return self.deliver(fresh)
        except Exception:
            logger.exception("live delivery failed", extra={"events": len(fresh)})
            return Report(failed=1)

    def audience(self, events: Sequence[Envelope]) -> dict[str, Recipient]:
        """Per connection, the events it gets (in the given order) and the types it subscribes to."""
        audience: dict[str, Recipient] = {}
        for event_type in sorted({event.type for event in events}):
            for subscriber in self._registry.subscribers(event_type):
                recipient = audience.setdefault(
                    subscriber.connection_id, Recipient(subscriber.connection_id, subscriber.types)
                )
                # Items written by racing subscription changes may differ: the union, so that `prev`
                # is never too low (too high only costs the client a replay).
                recipient.types |= subscriber.types
                recipient.found_by.append(event_type)
        for recipient in audience.values():
            recipient.events = [event for event in events if event.type in recipient.found_by]
        return audience

    @tracer.capture_method(capture_response=False)
    def send(self, recipients: Iterable[Recipient]) -> Report:
        """Post every recipient's frames, connections in parallel, each connection's frames in order."""
        started = time.perf_counter()
        report = Report()
        recipients = list(recipients)
        for recipient in recipients:  # a burst: more events for one connection than it should take
            if self._coalescing and self._coalescing.overloaded(len(recipient.events)):
                recipient.events = self._coalesced(recipient.events, recipient.types, report)
        # Each event encoded (and compressed) here, once for every connection that gets it with the
        # same `prev`; the workers then only read what is encoded.
        encoded: dict[EncodedKey, bytes] = {}
        for recipient in recipients:
            for event in recipient.events:
                encoded_for(event, recipient.types, self._compress_above, encoded)
        # A connection with enough posts in flight: its events wait for them (streaming.outbox).
        claimed = [recipient for recipient in recipients if self._outboxes.claim(recipient, encoded)]
        report.folded = sum(len(r.events) for r in recipients) - sum(len(r.events) for r in claimed)
        recipients = claimed
        for outcome in self._executor.map(lambda recipient: self._send_one(recipient, encoded), recipients):
            report.add(outcome)
        report.post_ms = (time.perf_counter() - started) * 1000
        return report

    def _coalesced(self, events: Sequence[Envelope], types: frozenset[str], report: Report) -> list[Envelope]:
        """`events` for a subscriber to `types`, superseded ones coalesced by key (streaming.coalesce)."""
        if self._coalescing is None:
            return list(events)
        coalesced = self._coalescing.apply(events, types)
        report.coalesced += coalesced.left_out
        return coalesced.events

    def _send_one(self, recipient: Recipient, encoded: Encoded) -> Report:
        """Post to one connection claimed for this, then what waited for it meanwhile."""
        cid = recipient.connection_id
        try:
            report = self._post(recipient, encoded)
        finally:
            held = self._outboxes.release(cid)
        if held.events and not (report.gone or report.failed):  # else the client replays them
            waiting = Recipient(cid, held.types, held.ordered(), held.found_by)
            if self._coalescing and self._coalescing.overloaded(len(waiting.events)):
                waiting.events = self._coalesced(waiting.events, waiting.types, report)
            drained = self._post(waiting, ChainMap(encoded, *held.encoded))
            drained.connections = 0  # the same connection
            report.add(drained)
        return report

    def _post(self, recipient: Recipient, encoded: Encoded) -> Report:
        report = Report(connections=1)
        oldest = min((stored_at(event) for event in recipient.events), default=None)
        pending: Sequence[Envelope] = recipient.events
        while pending:
            # Encoded in this thread only if coalesced here (then the same bytes, should two race).
            frame, taken = first_frame(pending, recipient.types, self._compress_above, encoded=encoded)
            report.frames += 1
            status, retries = post_with_retry(self._poster, recipient.connection_id, frame, self._sleep)
            report.retries += retries
            if status == GONE:
                # Also the subscriptions it was found by: one written while it disconnected would
                # otherwise outlive the connection record that lists them.
                self._registry.remove(recipient.connection_id, recipient.found_by)
                report.gone = 1
                return report
            if not 200 <= status < 300:
                # Stop here: events arrive in seq order per stream or not at all; the client replays.
                report.failed += 1
                logger.warning(
                    "frame not delivered", extra={"connection_id": recipient.connection_id, "status": status}
                )
                return report
            report.delivered += 1
            pending = pending[taken:]
            if retries and pending:  # throttled (or failing): coalesce what is left
                pending = self._coalesced(pending, recipient.types, report)
        if oldest is not None and report.delivered:
            report.latencies_ms.append(max(0.0, (self._clock() - oldest) * 1000))
        return report


def chunk_payload(recipients: Sequence[Recipient]) -> dict[str, Any]:
    """What a worker needs: the events by position (it reads them from the store, so the invocation
    stays small) and, per connection, which of them to send and the types it subscribes to."""
    positions = sorted({(e.stream, e.seq) for r in recipients for e in r.events})
    index = {position: i for i, position in enumerate(positions)}
    return {
        "version": PAYLOAD_VERSION,
        "events": [{"stream": stream, "seq": seq} for stream, seq in positions],
        "recipients": [
            {
                "connection_id": r.connection_id,
                "types": sorted(r.types),
                "events": [index[(e.stream, e.seq)] for e in r.events],
                "found_by": r.found_by,
            }
            for r in recipients
        ],
    }


def recipients_from_payload(
    payload: Mapping[str, Any], load: Callable[[str, int], Envelope | None]
) -> list[Recipient]:
    """The inverse of chunk_payload, reading the events with `load(stream, seq)`. An event that has
    expired meanwhile is skipped (the client's replay reports it as truncated). A chunk from another
    version of this code (handed over during a deploy) is skipped too: its connections notice from
    `prev` and `heads` and catch up by replay, which is better than a `prev` from a guess."""
    if payload.get("version") != PAYLOAD_VERSION:
        logger.warning("fan-out chunk of another version skipped", extra={"version": payload.get("version")})
        return []
    loaded = [load(position["stream"], int(position["seq"])) for position in payload["events"]]
    return [
        Recipient(
            connection_id=entry["connection_id"],
            types=frozenset(entry["types"]),
            events=[event for i in entry["events"] if (event := loaded[i]) is not None],
            found_by=list(entry["found_by"]),
        )
        for entry in payload["recipients"]
    ]
