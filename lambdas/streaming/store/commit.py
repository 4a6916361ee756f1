"""The commit point: one conditional update moves a stream's head from seq n to n+1 and carries the
new event, after event n has been copied out of the head into its own item."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from streaming.errors import ErrorCode, StreamingError
from streaming.events import Envelope, NewEvent, format_ts
from streaming.store.items import Head, event_item, expires_at, stream_key
from streaming.store.reads import Reader
from streaming.store.table import Table


def now_ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


class HeadCommit:
    def __init__(
        self,
        table: Table,
        reader: Reader,
        window_seconds: int,
        clock: Callable[[], float],
        max_attempts: int,
    ) -> None:
        self._table = table
        self._reader = reader
        self._window = window_seconds
        self._clock = clock
        self._max_attempts = max_attempts

    def advance(
        self, event: NewEvent, producer: str, stream: str, head: Head, fence_ms: int
    ) -> tuple[Envelope, int]:
        """Store the event at the seq after `head` (re-read after each lost race): the stored
        envelope and the number of races lost. Raises STREAM_CONTENDED when every attempt lost or
        the clock passed `fence_ms`; then nothing was committed."""
        for conflicts in range(self._max_attempts):
            now = now_ms(self._clock)
            if now > fence_ms:
                break  # past the fence the claim may be taken over: never commit now
            if head.last is not None:
                self._table.put_if_absent(head.last)  # the event below the new head must be in the table
            envelope = _next(event, producer, stream, head, format_ts(now))
            values = {
                ":seq": envelope.seq,
                ":heads": dict(envelope.type_heads),
                ":last": event_item(envelope, expires_at(now, self._window)),
            }
            if head.seq:
                values[":prev"] = head.seq
            started = time.monotonic()
            refused = self._table.update(
                stream_key(stream),
                0,
                "SET seq = :seq, heads = :heads, #last = :last",
                values,
                ConditionExpression="seq = :prev" if head.seq else "attribute_not_exists(seq)",
                ExpressionAttributeNames={"#last": "last"},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            if refused is None:
                return envelope, conflicts
            round_trip = time.monotonic() - started
            head = Head.of(refused) if refused else self._reader.head(stream)
            # Lost to a publisher in lock-step with this one: wait a random part of a few round
            # trips, so the losers of this seq do not all collide again on the next one.
            time.sleep(random.uniform(0, round_trip * min(2 * (conflicts + 1), 16)))  # noqa: S311
        raise StreamingError(
            ErrorCode.STREAM_CONTENDED, f"stream {stream} is too contended right now; retry with the same id"
        )


def _next(event: NewEvent, producer: str, stream: str, head: Head, ts: str) -> Envelope:
    """The event as stored right after `head`: the store assigns its position and links."""
    seq = head.seq + 1
    return Envelope(
        id=event.id,
        type=event.type,
        stream=stream,
        seq=seq,
        prev=head.heads.get(event.type, 0),
        ts=ts,
        schema_version=event.schema_version,
        data=event.data,
        producer=producer,
        key=event.key,
        type_heads={**head.heads, event.type: seq},
    )
