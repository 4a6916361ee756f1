"""An SSE subscription: replay after the cursor, then live tail, with heartbeats and a planned end.

Every event goes out with `id:` = the cursor after it, so a native EventSource resumes by itself
(Last-Event-ID) with no gap and no duplicate, and the same cursor resumes a WebSocket replay.

The live tail is shared by every subscription a process serves: one `Tailer` reads the stream heads
every poll interval and, when a head moves, reads the new events once and keeps the latest in
memory. Subscriptions at the tail take their events from there; one behind it (resuming from an older
cursor) reads the store until it has caught up. In Lambda each execution environment serves one
stream, so this costs one read per interval per stream head the subscriber needs; the local stack
serves every stream from one process, and the store sees one reader however many streams are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from enum import Enum

from streaming import codec
from streaming import cursor as cursors
from streaming.events import Envelope, format_ts
from streaming.observability import count, logger
from streaming.sse_plan import StreamPlan
from streaming.store import EventStore

PAGE_SIZE = 100
KEEP_PER_STREAM = 1000  # recent events kept in memory per stream
REFRESH_TIMEOUT_SECONDS = 10.0  # one refresh (heads and new events) takes far less


class Tailer:
    """Only its own poller task changes its state; subscriptions read it and wait for the next refresh
    on an event that holds no lock, so a subscription cancelled at any await leaves nothing behind."""

    def __init__(self, store: EventStore, streams_by_type: Mapping[str, str], interval: float) -> None:
        self._store = store
        self._interval = interval
        self._types_of: dict[str, frozenset[str]] = {}
        for event_type, stream in streams_by_type.items():
            self._types_of[stream] = self._types_of.get(stream, frozenset()) | {event_type}
        self._wanted: frozenset[str] = frozenset()  # the streams its subscriptions have asked for
        self._poller: asyncio.Task[None] | None = None
        self.head_reads = 0
        self.event_reads = 0
        self.restarts = 0
        self._start_over()

    def _start_over(self) -> None:
        self._heads: cursors.Position = {}
        self._recent: dict[str, deque[Envelope]] = {}
        self._since: cursors.Position = {}  # memory holds every event of the stream after this seq
        self._refreshes = 0
        self._refreshed_at = time.monotonic()
        self._refreshed = asyncio.Event()  # set, and replaced, after every refresh
        self._wake = asyncio.Event()  # refresh now, not at the next interval

    async def watch(self, streams: frozenset[str]) -> None:
        """Read these streams' heads from now on (only those: a viewer's stream costs one read per
        interval, not three), at once if the poller is already running."""
        if not streams <= self._wanted:
            self._wanted |= streams
            self._wake.set()
        await self.heads(streams)

    async def heads(self, streams: frozenset[str] = frozenset()) -> cursors.Position:
        """The heads as last read, once a read has covered `streams`."""
        while True:
            if self._poller is None or self._poller.done():  # exactly one, however many ask at once
                if self._poller is not None:
                    logger.warning("tailer poller had stopped; starting it again")
                self._poller = asyncio.create_task(self._poll())
            if self._refreshes and streams <= self._heads.keys():
                return dict(self._heads)
            await self._refreshed.wait()

    def fresh(self, within: float) -> bool:
        """Whether a refresh succeeded in the last `within` seconds."""
        return time.monotonic() - self._refreshed_at <= within

    def recover(self, stale_after: float) -> bool:
        """Start over, from an empty memory with a new poller, if the poller has stopped or no
        refresh has succeeded for `stale_after` seconds; whether it did."""
        stopped = self._poller is None or self._poller.done()
        if not stopped and self.fresh(stale_after):
            return False
        self.restart("stopped" if stopped else "stale")
        return True

    def restart(self, why: str) -> None:
        """Start over from an empty memory with a new poller (which counts as fresh, so streams that
        stalled together restart it once)."""
        logger.warning("tailer restarted", extra={"why": why})
        self.restarts += 1
        if self._poller is not None:
            self._poller.cancel()
        self._refreshed.set()  # wake every waiter: they look again, at the new state
        self._start_over()
        self._poller = asyncio.create_task(self._poll())

    def recent_after(
        self, position: cursors.Position, types: frozenset[str], streams: Iterable[str]
    ) -> tuple[list[Envelope], cursors.Position] | None:
        """The events of `types` after `position` from memory, in seq order per stream and by time
        across streams, and where each stream then stands; None if memory does not reach back."""
        found: list[list[Envelope]] = []
        reached: cursors.Position = {}
        for stream in streams:
            after = position.get(stream, 0)
            if stream not in self._since or after < self._since[stream]:
                return None
            recent = self._recent[stream]
            found.append([e for e in recent if e.seq > after and e.type in types])
            reached[stream] = max(after, self._heads.get(stream, 0), recent[-1].seq if recent else 0)
        merged = list(heapq.merge(*found, key=lambda e: (e.ts, e.stream, e.seq)))
        return merged, reached

    async def wait_beyond(self, position: cursors.Position, streams: frozenset[str], timeout: float) -> None:
        """Return when a head of `streams` is beyond `position`, or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    heads = await self.heads(streams)
                    if any(heads.get(stream, 0) > position.get(stream, 0) for stream in streams):
                        return
                    await self._refreshed.wait()

    async def _poll(self) -> None:
        while True:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):  # a hung read must not hang it
                    await self._refresh_heads()
                self._refreshed_at = time.monotonic()
            except Exception as error:  # the next interval tries again
                logger.warning("tailer could not read the heads", extra={"error": type(error).__name__})
            self._refreshes += 1
            refreshed, self._refreshed = self._refreshed, asyncio.Event()
            refreshed.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _refresh_heads(self) -> None:
        wanted = [event_type for stream in self._wanted for event_type in self._types_of.get(stream, ())]
        heads = await asyncio.to_thread(self._store.heads, wanted)
        self.head_reads += 1
        for stream, head in heads.items():
            known = self._heads.get(stream, 0)
            if stream not in self._since or head - known > KEEP_PER_STREAM:
                self._forget(stream, head)  # first sight, or a backlog (after a freeze) not worth reading
            elif head > known:
                try:
                    await self._read_new(stream, known, head)
                except Exception as error:
                    # Subscriptions behind the new head read the store themselves until memory is back.
                    logger.warning("tailer could not read new events", extra={"error": type(error).__name__})
                    self._forget(stream, head)
        self._heads = heads

    async def _read_new(self, stream: str, after: int, head: int) -> None:
        recent = self._recent[stream]
        position = {stream: max(after, recent[-1].seq if recent else 0)}  # after a failed read: no repeat
        while position[stream] < head:
            page = await asyncio.to_thread(self._store.after, position, self._types_of[stream], PAGE_SIZE)
            self.event_reads += 1
            recent.extend(e for e in page.events if not recent or e.seq > recent[-1].seq)
            if len(recent) == recent.maxlen:  # the oldest were dropped: say so before the next await
                self._since[stream] = max(self._since[stream], recent[0].seq - 1)
            if page.cursor.get(stream, 0) <= position[stream]:
                # The head is beyond what can be read: memory must not claim to reach it (the
                # caller starts it over at the head; subscriptions behind read the store).
                raise LookupError(f"{stream} could not be read up to its head {head}")
            position = {stream: page.cursor[stream]}

    def _forget(self, stream: str, head: int) -> None:
        """Memory of `stream` starts over at `head`: anyone behind it reads the store."""
        self._since[stream], self._recent[stream] = head, deque(maxlen=KEEP_PER_STREAM)


def _visible(heads: cursors.Position, plan: StreamPlan) -> cursors.Position:
    """Heads of the streams the subscriber sees, and no others."""
    return {stream: seq for stream, seq in heads.items() if stream in plan.streams}


class Ending(Enum):
    """How a subscription ended."""

    PLANNED = "planned"  # it wrote its end event: its planned end, or its token expiring
    STALLED = "stalled"  # it wrote its end event after it could write nothing for too long
    CLIENT_LEFT = "client left"  # stopped from outside before its end: its client went away
    FAILED = "failed"  # a failure ended it, with no end event


class Subscription:
    """The bytes of one SSE response (iterate it once): catch up, tail, heartbeat, and end before
    `max_stream_seconds`. A stream that could write nothing, not even a heartbeat, for `stall_seconds`
    ends itself (the client reconnects) and has the tailer start over if the tailer is what stalled.
    `ending` says how it ended."""

    def __init__(self, store: EventStore, tailer: Tailer, plan: StreamPlan) -> None:
        self._store, self._tailer, self._plan = store, tailer, plan
        self.ending = Ending.CLIENT_LEFT  # until it ends by itself: a stream stopped from outside

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks():
                yield chunk
        except Exception:
            self.ending = Ending.FAILED
            raise

    async def _chunks(self) -> AsyncIterator[bytes]:
        store, tailer, plan = self._store, self._tailer, self._plan
        loop = asyncio.get_running_loop()
        position = dict(plan.position)
        started = loop.time()
        ends_at = started + plan.max_stream_seconds
        stall_after = plan.stall_seconds
        next_heartbeat, written, ends_because = started, started, plan.ends_because
        while loop.time() < ends_at:
            try:
                async with asyncio.timeout_at(written + stall_after):
                    chunks, next_heartbeat = await _next_chunks(
                        store, tailer, plan, position, next_heartbeat, ends_at
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
        # The planned end: reconnect soon, from the cursor of the last event (Last-Event-ID does that).
        self.ending = Ending.STALLED if ends_because == "stalled" else Ending.PLANNED
        end = codec.dumps({"reconnect": True, "reason": ends_because})
        yield codec.sse_message(
            retry_ms=plan.retry_ms, event="end", event_id=cursors.encode(position), data=end
        )


async def _next_chunks(
    store: EventStore,
    tailer: Tailer,
    plan: StreamPlan,
    position: cursors.Position,
    next_heartbeat: float,
    ends_at: float,
) -> tuple[list[bytes], float]:
    """What the stream writes next, moving `position` past it, and when the next heartbeat is due:
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
    return chunks, next_heartbeat


def _heartbeat(heads: cursors.Position, position: cursors.Position, retry_ms: int) -> bytes:
    """A heartbeat carries the server time and the heads (a head beyond the cursor: something to come),
    and the cursor so far as its id, so a reconnect resumes from here even when nothing arrived."""
    body = {"server_time": format_ts(int(time.time() * 1000)), "heads": dict(heads)}
    return codec.sse_message(
        retry_ms=retry_ms, event="heartbeat", event_id=cursors.encode(position), data=codec.dumps(body)
    )
