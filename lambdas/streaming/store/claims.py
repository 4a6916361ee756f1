"""Id claims: the item `event#<id>` that makes publishing idempotent. A publisher claims an id before
it commits the event and releases a claim it could not commit; the claim records the event's seq and
ts when the event leaves the head's tail for its own item. A publisher that finds a claim nobody
completed looks for its event in the tail, and takes the claim over once it is old."""

from __future__ import annotations

from streaming import constants as c
from streaming.errors import ErrorCode, StreamingError
from streaming.events import NewEvent, parse_ts
from streaming.store import items
from streaming.store.items import Item, claim_key, expires_at
from streaming.store.table import Table

CLAIM_TIMEOUT_SECONDS = 120.0
# A claimant never commits later than this after its claim: before its function's timeout, so it can
# still release a claim it could not commit.
FENCE_SECONDS = c.PUBLISH_TIMEOUT_SECONDS - 5.0


class Claims:
    def __init__(self, table: Table, window_seconds: int) -> None:
        self._table = table
        self._window = window_seconds

    def claim(self, event: NewEvent, stream: str, from_seq: int, claimed_at: int) -> Item | None:
        """Claim the event's id; None when claimed now, else the claim found ({} if the backend did
        not return it). `from_seq` is where a take-over looks for the event if it was committed."""
        return self._table.put_if_absent(
            {
                c.PARTITION_KEY: claim_key(event.id),
                c.SORT_KEY: 0,
                "stream": stream,
                "type": event.type,
                "digest": event.digest(),
                "from_seq": from_seq,
                "claimed_at": claimed_at,
                c.TTL_ATTRIBUTE: expires_at(claimed_at, self._window),
            }
        )

    def completed(self, event: Item) -> Item:
        """The completed claim of a committed event, whole, from its item: put when the event is
        copied to its own key (a claim is settled once its event is committed, so nobody takes it over)."""
        envelope = items.envelope_of(event)
        return {
            c.PARTITION_KEY: claim_key(envelope.id),
            c.SORT_KEY: 0,
            "stream": envelope.stream,
            "type": envelope.type,
            "digest": NewEvent(
                envelope.id, envelope.type, envelope.data, envelope.schema_version, envelope.key
            ).digest(),
            "seq": envelope.seq,
            "ts": envelope.ts,
            c.TTL_ATTRIBUTE: event[c.TTL_ATTRIBUTE],
        }

    def get(self, event_id: str) -> Item:
        claim = self._table.get(claim_key(event_id), 0)
        if claim is None:  # expired between two reads: the caller may simply publish again
            raise StreamingError(ErrorCode.PUBLISH_IN_PROGRESS, f"claim of {event_id} changed; retry")
        return claim

    def take_over(self, claim: Item, event_id: str, claimed_at: int) -> bool:
        """Re-date an uncompleted claim as this publisher's; False if another did so first or it
        was completed meanwhile."""
        refused = self._table.update(
            claim_key(event_id),
            0,
            "SET claimed_at = :now, expires_at = :expires",
            {
                ":now": claimed_at,
                ":old": claim["claimed_at"],
                ":expires": expires_at(claimed_at, self._window),
            },
            ConditionExpression="claimed_at = :old AND attribute_not_exists(seq)",
        )
        return refused is None

    def release(self, event_id: str, claimed_at: int) -> None:
        """Free the id for an immediate retry, unless the claim is no longer this publisher's."""
        self._table.delete_if(
            claim_key(event_id),
            0,
            "claimed_at = :mine AND attribute_not_exists(seq)",
            {":mine": claimed_at},
        )

    def complete(self, event_id: str, seq: int, ts: str) -> None:
        """Record where the event was stored; the claim now lives as long as the event."""
        self._table.update(
            claim_key(event_id),
            0,
            "SET seq = :seq, ts = :ts, expires_at = :expires",
            {":seq": seq, ":ts": ts, ":expires": expires_at(parse_ts(ts), self._window)},
        )
