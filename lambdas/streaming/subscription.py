"""One SSE response: replay after the cursor, then the live tail (polled: streaming.tail; pushed:
streaming.relay), with heartbeats and
a planned end, or an end as soon as a newer stream of its subject has taken its lease (streaming.leases).

Every event goes out with `id:` = the cursor after it, so a native EventSource resumes by itself
(Last-Event-ID) with no gap and no duplicate, and the same cursor resumes a WebSocket replay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from enum import Enum

from aws_lambda_powertools.metrics import MetricUnit

from streaming import coalesce, codec
from streaming import cursor as cursors
from streaming.coalesce import Coalescing
from streaming.events import Envelope, format_ts, parse_ts
from streaming.observability import Sample, count, logger
from streaming.sse_plan import StreamPlan
from streaming.store import EventStore
from streaming.tail import PAGE_SIZE, LiveTail

# From an event's store time to its write, for the events stored while the stream was open (a
# replayed event's age says nothing about delivery): SSE's counterpart of DeliveryLatency.
DELIVERY_LATENCY = Sample("SseDeliveryLatency", MetricUnit.Milliseconds)


def _visible(heads: cursors.Position, plan: StreamPlan) -> cursors.Position:
    """Heads of the streams the subscriber sees, and no others."""
    return {stream: seq for stream, seq in heads.items() if stream in plan.streams}


class Ending(Enum):
    """How a subscription ended."""

    PLANNED = "planned"  # it wrote its end event: its planned end, or its token expiring
    STALLED = "stalled"  # it wrote its end event after it could write nothing for too long
    REPLACED = "replaced"  # it wrote its end event after a newer stream of its subject took its lease
    CLIENT_LEFT = "client left"  # stopped from outside before its end: its client went away
    FAILED = "failed"  # a failure ended it, with no end event

    @property
    def kind(self) -> str:
        """The Disconnects metric's kind: ended on purpose (by plan, by a newer stream of the same
        subject, or by the client) or not."""
        return "planned" if self in (Ending.PLANNED, Ending.REPLACED, Ending.CLIENT_LEFT) else "unplanned"


# An end event's reason, when it is not its plan's, to how the stream ended.
_ENDED_BECAUSE = {"stalled": Ending.STALLED, "replaced": Ending.REPLACED}


class Subscription:
    """The bytes of one SSE response (iterate it once): catch up, tail, heartbeat, and end before
    `max_stream_seconds`. A stream that could write nothing, not even a heartbeat, for `stall_seconds`
    ends itself (the client reconnects) and has the tailer start over if the tailer is what stalled.
    At each heartbeat after the first it asks `still_leased` (a blocking read, run in a thread) and
    ends when its lease was taken. A client that reads slower than events arrive finds more than
    `coalescing.above_events` waiting at its next write: superseded events are then coalesced (never
    those read from the store to catch up: that is replay). `ending` says how it ended."""

    def __init__(
        self,
        store: EventStore,
        tailer: LiveTail,
        plan: StreamPlan,
        *,
        still_leased: Callable[[], bool] = lambda: True,
        coalescing: Coalescing | None = None,
    ) -> None:
        self._store, self._tailer, self._plan = store, tailer, plan
        self._still_leased = still_leased
        self._coalescing = coalescing
        self.ending = Ending.CLIENT_LEFT  # until it ends by itself: a stream stopped from outside

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except Exception:
            self.ending = Ending.FAILED
            raise
        finally:
            DELIVERY_LATENCY.flush()

    async def _chunks(self) -> AsyncIterator[bytes]:
        store, tailer, plan = self._store, self._tailer, self._plan
        loop = asyncio.get_running_loop()
        position = dict(plan.position)
        started, opened_ms = loop.time(), time.time() * 1000
        ends_at = started + plan.max_stream_seconds
        stall_after = plan.stall_seconds
        next_heartbeat, written, ends_because = started, started, plan.ends_because
        while loop.time() < ends_at:
            try:
                async with asyncio.timeout_at(written + stall_after):
                    # At each heartbeat but the first (the lease was just taken).
                    lease_check_due = started < next_heartbeat <= loop.time()
                    if lease_check_due and not await asyncio.to_thread(self._still_leased):
                        ends_because = "replaced"
                        break
                    chunks, events, next_heartbeat = await _next_chunks(
                        store, tailer, plan, position, next_heartbeat, ends_at, self._coalescing
                    )
            except TimeoutError:
                ends_because = "stalled"
                logger.warning("sse stream stalled", extra={"seconds": stall_after, "role": plan.role})
                count("SseStreamsStalled")
                if tailer.recover(stale_after=stall_after):
                    count("SseTailerRestarts")
                break
            for chunk in chunks:
                yield chunk
            if chunks:
                written = loop.time()
                now_ms, stored_at = time.time() * 1000, [parse_ts(event.ts) for event in events]
                DELIVERY_LATENCY.add(max(0.0, now_ms - at) for at in stored_at if at >= opened_ms)
        # The planned end: reconnect soon, from the cursor of the last event (Last-Event-ID does that).
        self.ending = _ENDED_BECAUSE.get(ends_because, Ending.PLANNED)
        end = codec.dumps({"reconnect": True, "reason": ends_because})
        yield codec.sse_message(
            retry_ms=plan.retry_ms, event="end", event_id=cursors.encode(position), data=end
        )


async def _next_chunks(
    store: EventStore,
    tailer: LiveTail,
    plan: StreamPlan,
    position: cursors.Position,
    next_heartbeat: float,
    ends_at: float,
    coalescing: Coalescing | None = None,
) -> tuple[list[bytes], list[Envelope], float]:
    """What the stream writes next (and the events among it), moving `position` past it, and when the
    next heartbeat is due:
    a heartbeat if one is due, then the events after `position`; if neither, it waits for a head to
    move (or the heartbeat to come due) and writes nothing."""
    await tailer.watch(plan.streams)
    chunks: list[bytes] = []
    loop = asyncio.get_running_loop()
    if loop.time() >= next_heartbeat:
        if not tailer.fresh(plan.stall_seconds):  # heads this old would pass for "nothing new"
            raise TimeoutError("the tailer has not read the heads for too long")
        heads = _visible(await tailer.heads(plan.streams), plan)
        chunks += [codec.sse_comment("heartbeat"), _heartbeat(heads, position, plan.retry_ms)]
        next_heartbeat = loop.time() + plan.heartbeat_seconds
    recent = tailer.recent_after(position, plan.types, plan.streams)
    if recent is not None:
        (events, reached), more = recent, False
        if coalescing and coalescing.overloaded(len(events)):  # live events piled up behind the client
            coalesced = coalescing.apply(events, plan.types)
            events = coalesced.events
            coalesce.record(coalesced.left_out, transport="sse")
    else:  # behind what the tailer keeps: read the store
        page = await asyncio.to_thread(store.after, position, plan.types, PAGE_SIZE)
        events, reached, more = page.events, page.cursor, page.more
        if page.truncated:
            truncated = codec.dumps({"cursor": cursors.encode(position)})
            chunks.append(codec.sse_message(event="truncated", data=truncated))
    for event in events:
        position[event.stream] = event.seq
        data = codec.dumps(codec.encode_event(event, plan.compress_above, plan.types))
        chunks.append(codec.sse_message(event_id=cursors.encode(position), event=event.type, data=data))
    for stream, seq in reached.items():  # also past events of types this subscriber does not see
        position[stream] = max(position.get(stream, 0), seq)
    if not chunks and not more:
        wait = min(next_heartbeat, ends_at) - loop.time()
        await tailer.wait_beyond(position, plan.streams, max(0.0, wait))
    return chunks, events, next_heartbeat


def _heartbeat(heads: cursors.Position, position: cursors.Position, retry_ms: int) -> bytes:
    """A heartbeat carries the server time and the heads (a head beyond the cursor: something to come),
    and the cursor so far as its id, so a reconnect resumes from here even when nothing arrived."""
    body = {"server_time": format_ts(int(time.time() * 1000)), "heads": dict(heads)}
    return codec.sse_message(
        retry_ms=retry_ms, event="heartbeat", event_id=cursors.encode(position), data=codec.dumps(body)
    )
