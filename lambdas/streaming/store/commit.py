"""The commit point: one conditional update moves a stream's head from seq n to n+k and carries the k
new events at the end of its tail, the stream's last events. When they would overflow the tail, the
tail is first copied out of the head into its own items, with its events' completed claims."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence

from streaming.errors import ErrorCode, StreamingError
from streaming.events import Envelope, NewEvent, format_ts
from streaming.store.claims import Claims
from streaming.store.items import Head, Item, event_item, expires_at, stream_key
from streaming.store.reads import Reader
from streaming.store.table import BATCH_WRITE_LIMIT, Table

# The tail a head carries: every commit rewrites the whole head item, and a write costs a write unit
# per KB of the larger of the old and the new item, so a short tail; its events and their claims are
# copied out in one batch put when it is full.
TAIL_EVENTS = BATCH_WRITE_LIMIT // 2
TAIL_BYTES = 4096


def now_ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


class HeadCommit:
    def __init__(
        self,
        table: Table,
        claims: Claims,
        reader: Reader,
        window_seconds: int,
        clock: Callable[[], float],
        max_attempts: int,
    ) -> None:
        self._table = table
        self._claims = claims
        self._reader = reader
        self._window = window_seconds
        self._clock = clock
        self._max_attempts = max_attempts

    def advance(
        self,
        events: Sequence[NewEvent],
        producer: str,
        stream: str,
        head: Head,
        fence_ms: int,
    ) -> tuple[list[Envelope], Head, int]:
        """Store the events at the seqs after `head` (re-read after each lost race): the stored
        envelopes, the head that now carries them, and the number of races lost. Raises
        STREAM_CONTENDED when every attempt lost or the clock passed `fence_ms`; then nothing was
        committed."""
        for conflicts in range(self._max_attempts):
            now = now_ms(self._clock)
            if now > fence_ms:
                break  # past the fence a claim may be taken over: never commit now
            envelopes = _placed(events, producer, stream, head, format_ts(now))
            batch = [event_item(envelope, expires_at(now, self._window)) for envelope in envelopes]
            tail = [*head.batch, *batch]
            if not _fits(tail):  # the events below the new tail must be in the table
                self._table.put_all([*head.batch, *map(self._claims.completed, head.batch)])
                tail = batch
            values = {":seq": envelopes[-1].seq, ":heads": dict(envelopes[-1].type_heads), ":batch": tail}
            if head.seq:
                values[":prev"] = head.seq
            started = time.monotonic()
            refused = self._table.update(
                stream_key(stream),
                0,
                "SET seq = :seq, heads = :heads, #batch = :batch REMOVE #last",
                values,
                ConditionExpression="seq = :prev" if head.seq else "attribute_not_exists(seq)",
                ExpressionAttributeNames={"#batch": "batch", "#last": "last"},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            if refused is None:
                return (
                    envelopes,
                    Head(envelopes[-1].seq, dict(envelopes[-1].type_heads), tuple(tail)),
                    conflicts,
                )
            round_trip = time.monotonic() - started
            head = Head.of(refused) if refused else self._reader.head(stream)
            # Lost to a publisher in lock-step with this one: wait a random part of a few round
            # trips, so the losers of this seq do not all collide again on the next one.
            time.sleep(random.uniform(0, round_trip * min(2 * (conflicts + 1), 16)))  # noqa: S311
        raise StreamingError(
            ErrorCode.STREAM_CONTENDED, f"stream {stream} is too contended right now; retry with the same id"
        )


def _fits(tail: list[Item]) -> bool:
    return len(tail) <= TAIL_EVENTS and len(json.dumps(tail, default=str)) <= TAIL_BYTES


def _placed(events: Sequence[NewEvent], producer: str, stream: str, head: Head, ts: str) -> list[Envelope]:
    """The events as stored right after `head`, in order: the store assigns their positions and links."""
    placed: list[Envelope] = []
    seq, heads = head.seq, dict(head.heads)
    for event in events:
        seq += 1
        placed.append(
            Envelope(
                id=event.id,
                type=event.type,
                stream=stream,
                seq=seq,
                prev=heads.get(event.type, 0),
                ts=ts,
                schema_version=event.schema_version,
                data=event.data,
                producer=producer,
                key=event.key,
                type_heads={**heads, event.type: seq},
            )
        )
        heads[event.type] = seq
    return placed
