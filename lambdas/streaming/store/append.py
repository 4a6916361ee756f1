"""Appending an event: claim its id, commit it at the stream head, record its seq in the claim. An id
claimed before resolves to the stored event, waits for an append in flight, or is taken over from a
publisher that died before completing it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum

from streaming.errors import ErrorCode, StreamingError
from streaming.events import NewEvent
from streaming.results import Appended
from streaming.store.claims import Claims
from streaming.store.commit import HeadCommit, now_ms
from streaming.store.items import Head, Item
from streaming.store.reads import Reader


class Step(Enum):
    """The points of an append where a publisher that crashes or stalls leaves work for recovery."""

    CLAIMED = "claimed"  # the id is claimed (or taken over); the head has not moved yet
    COMMITTED = "committed"  # the head carries the event; the claim does not know its seq yet


class Appender:
    def __init__(
        self,
        streams_by_type: Mapping[str, str],
        claims: Claims,
        commit: HeadCommit,
        reader: Reader,
        *,
        clock: Callable[[], float],
        claim_timeout_seconds: float,
        fence_seconds: float,
        pending_wait_seconds: float,
        at_step: Callable[[Step], None],
    ) -> None:
        self._streams_by_type = dict(streams_by_type)
        self._claims = claims
        self._commit = commit
        self._reader = reader
        self._clock = clock
        self._claim_timeout_ms = int(claim_timeout_seconds * 1000)
        self._fence_ms = int(fence_seconds * 1000)
        self._pending_wait = pending_wait_seconds
        self._at_step = at_step

    def append(self, events: Sequence[NewEvent], producer: str) -> list[Appended]:
        return [self._append_one(event, producer) for event in events]

    def _append_one(self, event: NewEvent, producer: str) -> Appended:
        stream = self._streams_by_type[event.type]
        head = self._reader.head(stream)
        claimed_at = now_ms(self._clock)
        found = self._claims.claim(event, stream, from_seq=head.seq + 1, claimed_at=claimed_at)
        if found is None:
            return self._store(event, producer, stream, head, claimed_at)
        # An empty answer: a backend that does not return the existing item on a failed condition.
        return self._resolve_claimed(event, producer, found or self._claims.get(event.id))

    def _resolve_claimed(self, event: NewEvent, producer: str, claim: Item) -> Appended:
        """The id was claimed before: return the stored result, wait for an in-flight publish,
        or take over a claim whose publisher died before committing it."""
        if claim["digest"] != event.digest():
            raise StreamingError(
                ErrorCode.ID_CONFLICT, f"event id {event.id} was already used for a different event"
            )
        deadline = time.monotonic() + self._pending_wait
        while "seq" not in claim:
            if now_ms(self._clock) - int(claim["claimed_at"]) > self._claim_timeout_ms:
                return self._take_over(event, producer, claim)
            if time.monotonic() > deadline:
                raise StreamingError(
                    ErrorCode.PUBLISH_IN_PROGRESS,
                    f"event {event.id} is being stored by another request; retry",
                )
            time.sleep(0.05)
            claim = self._claims.get(event.id)
        return Appended(event.id, event.type, claim["stream"], int(claim["seq"]), claim["ts"], duplicate=True)

    def _take_over(self, event: NewEvent, producer: str, claim: Item) -> Appended:
        stream = claim["stream"]
        stored = self._reader.find(stream, int(claim["from_seq"]), event.id)
        if stored is not None:  # its publisher committed it, then died before recording the seq
            self._claims.complete(event.id, stored.seq, stored.ts)
            return Appended(event.id, event.type, stream, stored.seq, stored.ts, duplicate=True)
        claimed_at = now_ms(self._clock)
        if not self._claims.take_over(claim, event.id, claimed_at):
            return self._resolve_claimed(event, producer, self._claims.get(event.id))
        return self._store(event, producer, stream, self._reader.head(stream), claimed_at)

    def _store(self, event: NewEvent, producer: str, stream: str, head: Head, claimed_at: int) -> Appended:
        """Commit the claimed event, then complete its claim."""
        self._at_step(Step.CLAIMED)
        try:
            envelope, conflicts = self._commit.advance(
                event, producer, stream, head, fence_ms=claimed_at + self._fence_ms
            )
        except StreamingError:
            # Every attempt was refused, so nothing was committed: free the id for an immediate retry.
            # (After any other failure the outcome is unknown; the claim then waits for a take-over.)
            self._claims.release(event.id, claimed_at)
            raise
        self._at_step(Step.COMMITTED)
        self._claims.complete(event.id, envelope.seq, envelope.ts)
        return Appended(
            event.id,
            event.type,
            stream,
            envelope.seq,
            envelope.ts,
            duplicate=False,
            conflicts=conflicts,
            envelope=envelope,
        )
