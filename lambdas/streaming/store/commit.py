"""The commit point: one conditional update moves a stream's head from seq n to n+k and carries the k
new events (the batch), after the previous batch has been copied out of the head into its own items."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

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
        self,
        events: Sequence[NewEvent],
        producer: str,
        stream: str,
        head: Head,
        fence_ms: int,
        *,
        copied: bool,
    ) -> tuple[list[Envelope], Head, int]:
        """Store the events at the seqs after `head` (re-read after each lost race): the stored
        envelopes, the head that now carries them, and the number of races lost. `copied` says the
        batch `head` carries is known to be in the table already. Raises STREAM_CONTENDED when every
        attempt lost or the clock passed `fence_ms`; then nothing was committed."""
        for conflicts in range(self._max_attempts):
            now = now_ms(self._clock)
            if now > fence_ms:
                break  # past the fence a claim may be taken over: never commit now
            if head.batch and not copied:  # the events below the new head must be in the table
                self._table.put_all(head.batch)
            envelopes = _placed(events, producer, stream, head, format_ts(now))
            batch = [event_item(envelope, expires_at(now, self._window)) for envelope in envelopes]
            values = {":seq": envelopes[-1].seq, ":heads": dict(envelopes[-1].type_heads), ":batch": batch}
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
                    Head(envelopes[-1].seq, dict(envelopes[-1].type_heads), tuple(batch)),
                    conflicts,
                )
            round_trip = time.monotonic() - started
            head, copied = (Head.of(refused) if refused else self._reader.head(stream)), False
            # Lost to a publisher in lock-step with this one: wait a random part of a few round
            # trips, so the losers of this seq do not all collide again on the next one.
            time.sleep(random.uniform(0, round_trip * min(2 * (conflicts + 1), 16)))  # noqa: S311
        raise StreamingError(
            ErrorCode.STREAM_CONTENDED, f"stream {stream} is too contended right now; retry with the same id"
        )


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
