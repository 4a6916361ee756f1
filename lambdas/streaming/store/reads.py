"""The read path: replay after a cursor, the latest events, one event by position, stream heads.
Every read of a stream reads its head first, then the table below its batch."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from streaming.cursor import Position
from streaming.events import Envelope
from streaming.results import Page
from streaming.store import items
from streaming.store.items import Head, Item, stream_key
from streaming.store.table import Table


@dataclass
class _Scan:
    """What one stream contributed to a replay: the last scanned seq, and the visible events."""

    last_seq: int
    events: list[Envelope]
    more: bool = False
    truncated: bool = False


class Reader:
    def __init__(
        self, table: Table, streams_by_type: Mapping[str, str], clock: Callable[[], float], max_scan: int
    ) -> None:
        self._table = table
        self._streams_by_type = dict(streams_by_type)
        self._clock = clock
        self._max_scan = max_scan

    def after(self, cursor: Position, types: frozenset[str], limit: int) -> Page:
        """Events of `types` after `cursor`, at most `limit`, expired events excluded. Each stream's
        events come in seq order; streams are interleaved by ts."""
        now_s = self._clock()
        scans = {
            stream: self._scan_forward(stream, cursor.get(stream, 0), types, limit, now_s)
            for stream in self._streams_of(types)
        }
        merged = heapq.merge(*(scan.events for scan in scans.values()), key=_by_time)
        served = list(itertools.islice(merged, limit))
        new_cursor = dict(cursor)
        held_back = False
        for stream, scan in scans.items():
            count = sum(1 for event in served if event.stream == stream)
            if count < len(scan.events):  # what was served is a prefix of this stream's events
                new_cursor[stream] = scan.events[count].seq - 1
                held_back = True
            else:
                new_cursor[stream] = scan.last_seq
        return Page(
            events=served,
            cursor=new_cursor,
            more=held_back or any(scan.more for scan in scans.values()),
            truncated=any(scan.truncated for scan in scans.values()),
        )

    def latest(self, types: frozenset[str], count: int) -> Page:
        """The last `count` events of `types` (oldest first) and a cursor at the head of each stream.
        `more` says a stream was scanned to the bound without finding `count` visible events."""
        now_s = self._clock()
        newest: list[list[Envelope]] = []
        tail: Position = {}
        bounded = False
        for stream in self._streams_of(types):
            head = self.head(stream)
            tail[stream] = head.seq
            found: list[Envelope] = []
            for scanned, item in enumerate(self._log(stream, after=0, head=head, newest_first=True)):
                if len(found) >= count:
                    break
                if scanned >= self._max_scan:
                    bounded = True
                    break
                if items.event_type(item) in types and not items.expired(item, now_s):
                    found.append(items.envelope_of(item))
            newest.append(found)
        # Newest first, each stream in seq order, so what is kept of a stream is its newest part.
        kept = list(itertools.islice(heapq.merge(*newest, key=_by_time, reverse=True), count))
        return Page(events=kept[::-1], cursor=tail, more=bounded)

    def get(self, stream: str, seq: int) -> Envelope | None:
        """One event by position (the fan-out worker reads what it delivers); None if it has expired."""
        item = self._table.get(stream_key(stream), seq)
        if item is None:
            item = self.head(stream).in_batch(seq)
        if item is None or items.expired(item, self._clock()):
            return None
        return items.envelope_of(item)

    def heads(self, types: Iterable[str] | None = None) -> Position:
        """The last seq of every stream (0 for an empty stream), or of the streams of `types`."""
        streams = (
            self._streams_of(frozenset(types)) if types is not None else set(self._streams_by_type.values())
        )
        return {stream: self.head(stream).seq for stream in sorted(streams)}

    def head(self, stream: str) -> Head:
        return Head.of(self._table.get(stream_key(stream), 0))

    def find(self, stream: str, from_seq: int, event_id: str) -> Envelope | None:
        """The event with `event_id` at `from_seq` or later, if it was committed."""
        for item in self._log(stream, after=from_seq - 1):
            if items.event_id(item) == event_id:
                return items.envelope_of(item)
        return None

    def _scan_forward(
        self, stream: str, start: int, types: frozenset[str], limit: int, now_s: float
    ) -> _Scan:
        scan = _Scan(last_seq=start, events=[])
        for scanned, item in enumerate(self._log(stream, after=start)):
            if len(scan.events) >= limit or scanned >= self._max_scan:
                scan.more = True
                break
            seq = items.event_seq(item)
            expired = items.expired(item, now_s)
            # A missing or expired seq after a given cursor can only be an event the replay window
            # dropped: the sequence itself has no holes.
            if start and (seq != scan.last_seq + 1 or expired):
                scan.truncated = True
            scan.last_seq = seq
            if not expired and items.event_type(item) in types:
                scan.events.append(items.envelope_of(item))
        return scan

    def _log(
        self, stream: str, *, after: int, head: Head | None = None, newest_first: bool = False
    ) -> Iterator[Item]:
        """The stream's events with seq > `after`: the table below the head's batch, then the batch.
        The head is read first, so nothing committed below it can be missed."""
        head = head or self.head(stream)
        if head.seq <= after:
            return
        batch = [item for item in head.batch if items.event_seq(item) > after]
        below: Iterator[Item] = iter(())
        if head.first_in_batch - 1 > after:
            below = self._table.query(
                stream_key(stream), after + 1, head.first_in_batch - 1, forward=not newest_first
            )
        if newest_first:
            yield from reversed(batch)
            yield from below
        else:
            yield from below
            yield from batch

    def _streams_of(self, types: frozenset[str]) -> list[str]:
        return sorted({self._streams_by_type[t] for t in types if t in self._streams_by_type})


def _by_time(event: Envelope) -> tuple[str, str, int]:
    return (event.ts, event.stream, event.seq)
