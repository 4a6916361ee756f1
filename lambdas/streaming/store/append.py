"""Appending events: claim their ids, then commit those claimed now at the stream head together (a
batch per stream, added to the head's tail). An id claimed before resolves to the stored event (in the
table, or still in the head's tail), waits for an append in flight, or is taken over from a publisher
that died before committing it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial

from streaming.errors import ErrorCode, StreamingError
from streaming.events import NewEvent, data_bytes
from streaming.results import Appended
from streaming.store.claims import Claims
from streaming.store.commit import HeadCommit, now_ms
from streaming.store.items import Head, Item, event_seq
from streaming.store.reads import Reader

# One commit carries at most this much: the head item holds the batch and has a 400 KB limit, which the
# old and the new batch must fit together (moto checks the size while applying the update).
MAX_BATCH_EVENTS = 100
MAX_BATCH_BYTES = 180_000
ITEM_OVERHEAD_BYTES = 1024  # an event item's attributes besides `data`, generously
KNOWN_HEAD_SECONDS = 5.0  # how long the head this publisher last committed is worth trying first
# Maps a claim over a request's events, as the builtin `map` or an executor's `map` does.
ClaimMap = Callable[[Callable[[NewEvent], Item | None], Iterable[NewEvent]], Iterator[Item | None]]


class Step(Enum):
    """The points of an append where a publisher that crashes or stalls leaves work for recovery."""

    CLAIMED = "claimed"  # the ids are claimed (or taken over); the head has not moved yet
    COMMITTED = "committed"  # the head carries the events; the publisher has not answered yet


@dataclass(frozen=True, slots=True)
class _Claimed:
    index: int  # in the request
    event: NewEvent
    from_seq: int
    claimed_at: int


@dataclass(frozen=True, slots=True)
class _Known:
    head: Head  # as this publisher committed it
    at: float  # monotonic


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
        concurrently: ClaimMap,
    ) -> None:
        """`concurrently` maps the claim of each event of a request (an executor's `map`: the claims
        are independent conditional writes, each a round trip)."""
        self._streams_by_type = dict(streams_by_type)
        self._concurrently = concurrently
        self._claims = claims
        self._commit = commit
        self._reader = reader
        self._clock = clock
        self._claim_timeout_ms = int(claim_timeout_seconds * 1000)
        self._fence_ms = int(fence_seconds * 1000)
        self._pending_wait = pending_wait_seconds
        self._at_step = at_step
        self._known: dict[str, _Known] = {}

    def append(self, events: Sequence[NewEvent], producer: str) -> list[Appended]:
        by_stream: dict[str, list[tuple[int, NewEvent]]] = {}
        for index, event in enumerate(events):
            by_stream.setdefault(self._streams_by_type[event.type], []).append((index, event))
        results: dict[int, Appended] = {}
        for stream, indexed in by_stream.items():
            results.update(self._append_to(stream, indexed, producer))
        return [results[index] for index in range(len(events))]

    def _append_to(
        self, stream: str, indexed: list[tuple[int, NewEvent]], producer: str
    ) -> dict[int, Appended]:
        head = self._head(stream)
        claimed: list[_Claimed] = []
        found: list[tuple[int, NewEvent, Item]] = []
        claimed_at = now_ms(self._clock)
        claims = self._concurrently(
            partial(self._claims.claim, stream=stream, from_seq=head.seq + 1, claimed_at=claimed_at),
            [event for _, event in indexed],
        )
        for (index, event), claim in zip(indexed, claims, strict=True):
            if claim is None:
                claimed.append(_Claimed(index, event, head.seq + 1, claimed_at))
            else:
                found.append((index, event, claim))
        results: dict[int, Appended] = {}
        batches = list(_batches(claimed))
        for number, batch in enumerate(batches):
            try:
                results.update(self._store(batch, producer, stream, head))
            except Exception as error:
                # Every attempt refused means nothing was committed. After any other failure the
                # outcome is unknown, so the claims wait for a take-over; later batches were never tried.
                untried = batches[number if isinstance(error, StreamingError) else number + 1 :]
                for untried_claim in (claim for later in untried for claim in later):
                    self._claims.release(untried_claim.event.id, untried_claim.claimed_at)
                raise
            head = self._known[stream].head
        for index, event, claim in found:
            # An empty claim: a backend that does not return the existing item on a failed condition.
            results[index] = self._resolve_claimed(event, producer, claim or self._claims.get(event.id))
        return results

    def _head(self, stream: str) -> Head:
        """The head to commit on first: the one this publisher committed last if that was recent (it
        is right unless another publisher moved it since), else the stored one."""
        known = self._known.get(stream)
        if known is not None and time.monotonic() - known.at < KNOWN_HEAD_SECONDS:
            return known.head
        return self._reader.head(stream)

    def _resolve_claimed(self, event: NewEvent, producer: str, claim: Item) -> Appended:
        """The id was claimed before: return the stored result, wait for an in-flight publish,
        or take over a claim whose publisher died before committing it."""
        if claim["digest"] != event.digest():
            raise StreamingError(
                ErrorCode.ID_CONFLICT, f"event id {event.id} was already used for a different event"
            )
        deadline = time.monotonic() + self._pending_wait
        while "seq" not in claim:
            # Committed events keep a pending claim while in the head's tail: their claims are
            # completed when the tail is copied out, before the head moves past them.
            in_tail = self._reader.head(claim["stream"]).find(event.id, int(claim["from_seq"]))
            if in_tail is not None:
                return _duplicate(event, claim["stream"], event_seq(in_tail), in_tail["ts"])
            if now_ms(self._clock) - int(claim["claimed_at"]) > self._claim_timeout_ms:
                return self._take_over(event, producer, claim)
            if time.monotonic() > deadline:
                raise StreamingError(
                    ErrorCode.PUBLISH_IN_PROGRESS,
                    f"event {event.id} is being stored by another request; retry",
                )
            time.sleep(0.05)
            claim = self._claims.get(event.id)
        return _duplicate(event, claim["stream"], int(claim["seq"]), claim["ts"])

    def _take_over(self, event: NewEvent, producer: str, claim: Item) -> Appended:
        stream = claim["stream"]
        from_seq = int(claim["from_seq"])
        stored = self._reader.find(stream, from_seq, event.id)
        if stored is not None:  # committed; out of the tail since its claim was read
            self._claims.complete(event.id, stored.seq, stored.ts)
            return _duplicate(event, stream, stored.seq, stored.ts)
        claimed_at = now_ms(self._clock)
        if not self._claims.take_over(claim, event.id, claimed_at):
            return self._resolve_claimed(event, producer, self._claims.get(event.id))
        [result] = self._store(
            [_Claimed(0, event, from_seq, claimed_at)], producer, stream, self._reader.head(stream)
        ).values()
        return result

    def _store(self, batch: list[_Claimed], producer: str, stream: str, head: Head) -> dict[int, Appended]:
        """Commit the claimed events together."""
        self._at_step(Step.CLAIMED)
        fence_ms = batch[0].claimed_at + self._fence_ms  # the earliest claim's
        try:
            envelopes, head, conflicts = self._commit.advance(
                [claim.event for claim in batch], producer, stream, head, fence_ms
            )
        except Exception:
            self._known.pop(stream, None)
            raise
        self._at_step(Step.COMMITTED)
        self._known[stream] = _Known(head, time.monotonic())
        return {
            claim.index: Appended(
                claim.event.id,
                claim.event.type,
                stream,
                envelope.seq,
                envelope.ts,
                duplicate=False,
                conflicts=conflicts if number == 0 else 0,
                envelope=envelope,
            )
            for number, (claim, envelope) in enumerate(zip(batch, envelopes, strict=True))
        }


def _duplicate(event: NewEvent, stream: str, seq: int, ts: str) -> Appended:
    return Appended(event.id, event.type, stream, seq, ts, duplicate=True)


def _batches(claimed: list[_Claimed]) -> Iterator[list[_Claimed]]:
    """The claimed events in order, cut into batches one head item can carry."""
    batch: list[_Claimed] = []
    size = 0
    for claim in claimed:
        event_bytes = data_bytes(claim.event.data) + ITEM_OVERHEAD_BYTES
        if batch and (len(batch) == MAX_BATCH_EVENTS or size + event_bytes > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(claim)
        size += event_bytes
    if batch:
        yield batch
