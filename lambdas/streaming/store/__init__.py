"""The event store: one DynamoDB table holding, per stream, a gap-free sequence of events.

Layout (partition key `pk` string, sort key `sk` number, TTL attribute `expires_at`):

    pk="stream#<name>", sk=0      the stream head: seq of the last event, the last seq of each type, and
                                  the stream's last events (`batch`, its tail); never expires
    pk="stream#<name>", sk=<seq>  one event below the tail, seq >= 1
    pk="event#<id>",    sk=0      the idempotency claim of an event id: its stream, and its seq once the
                                  event is below the tail

The head is the commit point. A publish claims its events' ids, then moves the head from seq n to n+k
with one conditional update (`seq = n`) that adds its k events of that stream to the head's tail.
When they would overflow the tail, the publisher first copies the tail out, its events and their
completed claims in one batch put, and the k events start a new tail: so the table always holds every
event below the tail and the head holds the tail. Nothing more is written for a request after its
commit. Readers read the head first, then the table below it. A publisher that loses the race gets the
new head back and tries again; one whose id is claimed finds the event in the completed claim or in
the tail.

So the sequence has no hole and no duplicate whatever publishers crash where, the head never lags, and
TTL can never free a seq for reuse. Every write is a single-item conditional write or a put of an item
whose content at its key is settled (an event at its seq, a claim once its event is committed); no
transaction. The id claim makes publishing idempotent; a claimant stops trying to commit FENCE_SECONDS
after its claim, and only a claim older than CLAIM_TIMEOUT_SECONDS is taken over, so the two never
overlap unless clocks disagree by more than the difference (95 s).

The parts: `items` maps envelopes and heads to items, `table` makes the DynamoDB calls, `claims` keeps
the id claims, `commit` moves the head, `append` runs a publish from claims to recorded seqs, and
`reads` serves replay; EventStore puts them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from streaming.cursor import Position
from streaming.events import Envelope, NewEvent
from streaming.observability import tracer
from streaming.results import Appended, Page
from streaming.store.append import Appender, Step
from streaming.store.claims import CLAIM_TIMEOUT_SECONDS, FENCE_SECONDS, Claims
from streaming.store.commit import HeadCommit
from streaming.store.reads import Reader
from streaming.store.table import Table

__all__ = ["EventStore", "Step"]


def _no_hook(step: Step) -> None:
    pass


class EventStore:
    def __init__(
        self,
        client: Any,
        table_name: str,
        streams_by_type: Mapping[str, str],
        replay_window_seconds: int,
        *,
        clock: Callable[[], float] = time.time,
        claim_timeout_seconds: float = CLAIM_TIMEOUT_SECONDS,
        fence_seconds: float = FENCE_SECONDS,
        pending_wait_seconds: float = 2.0,
        max_commit_attempts: int = 200,
        max_scan: int = 1000,
        at_step: Callable[[Step], None] = _no_hook,
        executor: Executor | None = None,
    ) -> None:
        """`at_step` is called as an append reaches each Step: where tests inject a crash or a pause.
        `executor` makes a request's id claims concurrently (one after another without it)."""
        table = Table(client, table_name)
        self._reader = Reader(table, streams_by_type, clock, max_scan)
        claims = Claims(table, replay_window_seconds)
        self._appender = Appender(
            streams_by_type,
            claims,
            HeadCommit(table, claims, self._reader, replay_window_seconds, clock, max_commit_attempts),
            self._reader,
            clock=clock,
            claim_timeout_seconds=claim_timeout_seconds,
            fence_seconds=fence_seconds,
            pending_wait_seconds=pending_wait_seconds,
            at_step=at_step,
            concurrently=executor.map if executor is not None else map,
        )

    @tracer.capture_method(capture_response=False)
    def append(self, events: Sequence[NewEvent], producer: str) -> list[Appended]:
        """Store each event once, in order. Re-appending a stored id returns its original seq.
        `producer` is who publishes, as the caller authenticated it."""
        return self._appender.append(events, producer)

    def after(self, cursor: Position, types: frozenset[str], limit: int) -> Page:
        """Events of `types` after `cursor`, at most `limit`, expired events excluded. Each stream's
        events come in seq order; streams are interleaved by ts."""
        return self._reader.after(cursor, types, limit)

    def latest(self, types: frozenset[str], count: int) -> Page:
        """The last `count` events of `types` (oldest first) and a cursor at the head of each stream.
        `more` says a stream was scanned to the bound without finding `count` visible events."""
        return self._reader.latest(types, count)

    def get(self, stream: str, seq: int) -> Envelope | None:
        """One event by position (the fan-out worker reads what it delivers); None if it has expired."""
        return self._reader.get(stream, seq)

    def heads(self, types: Iterable[str] | None = None) -> Position:
        """The last seq of every stream (0 for an empty stream), or of the streams of `types`."""
        return self._reader.heads(types)
