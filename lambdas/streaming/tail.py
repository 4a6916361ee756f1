"""The live tail of the SSE subscriptions (streaming.subscription).

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
from collections.abc import Iterable, Mapping
from typing import Protocol

from streaming import cursor as cursors
from streaming.events import Envelope
from streaming.observability import logger
from streaming.store import EventStore

PAGE_SIZE = 100
KEEP_PER_STREAM = 1000  # recent events kept in memory per stream
REFRESH_TIMEOUT_SECONDS = 10.0  # one refresh (heads and new events) takes far less


class LiveTail(Protocol):
    """Where a subscription (streaming.subscription) takes its live events from: the store polled by
    the process's `Tailer`, or the WebSocket API's pushes relayed to one stream (streaming.relay)."""

    async def watch(self, streams: frozenset[str]) -> None: ...
    async def heads(self, streams: frozenset[str] = frozenset()) -> cursors.Position: ...
    def fresh(self, within: float) -> bool: ...
    def recover(self, stale_after: float) -> bool: ...
    def recent_after(
        self, position: cursors.Position, types: frozenset[str], streams: Iterable[str]
    ) -> tuple[list[Envelope], cursors.Position] | None: ...
    async def wait_beyond(
        self, position: cursors.Position, streams: frozenset[str], timeout: float
    ) -> None: ...


def from_memory(
    since: cursors.Position,
    recent: Mapping[str, deque[Envelope]],
    heads: cursors.Position,
    position: cursors.Position,
    types: frozenset[str],
    streams: Iterable[str],
) -> tuple[list[Envelope], cursors.Position] | None:
    """The events of `types` after `position` in `recent` (which holds, per stream, every event of its
    types after `since`), in seq order per stream and by time across streams, and where each stream then
    stands (up to its head in `heads`, when memory holds every type); None if memory does not reach back."""
    found: list[list[Envelope]] = []
    reached: cursors.Position = {}
    for stream in streams:
        after = position.get(stream, 0)
        if stream not in since or after < since[stream]:
            return None
        kept = recent[stream]
        found.append([e for e in kept if e.seq > after and e.type in types])
        reached[stream] = max(after, heads.get(stream, 0), kept[-1].seq if kept else 0)
    merged = list(heapq.merge(*found, key=lambda e: (e.ts, e.stream, e.seq)))
    return merged, reached


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
        return from_memory(self._since, self._recent, self._heads, position, types, streams)

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
