"""Open SSE streams per token subject, counted so that one token cannot hold every stream the
deployment allows (`sse.reserved_concurrency`). Each open stream holds a lease in the connections
table, `pk="sse#<subject>"`, `sk=<lease id>`, and is listed with its role under `pk="sse"`, `sk=<lease
id>` (so the open streams are counted with one Query). The lease id starts with the time both expire,
shortly after the stream's planned end (so a stream whose end was never noticed frees its lease by
itself); both are deleted when the stream ends.

A subject at its cap is not refused: the newest stream wins. Behind Lambda's response streaming a
client's going away may never reach its stream, and a user who reloads a page would otherwise be
locked out by the streams they left until those reach their planned ends. `acquire` deletes the
subject's oldest leases (the first to expire: sort-key order) to make room; each stream looks for its
lease at every heartbeat (`held`) and, once it is gone, ends with the reason `replaced`. A client that
is still there resumes from its cursor.

A lease is replaced only once it is `replaceable_after` seconds old (the SSE plan passes the heartbeat
interval). A replaced stream runs on until its next check; without that age, a subject opening
streams faster than they notice could keep any number of them running. With it, the leases replaced
within any heartbeat interval were all held at its start, so a subject runs at most twice its cap at
once, and one whose leases are all younger is refused for those few seconds.

The count is a soft cap, as acquires race. Two streams opened at the same instant may both find the
subject one short of its cap and both take a lease, or both find it at the cap and both delete the
same oldest lease: either way one over, until the next acquire deletes down to the cap again. They
never delete each other's leases, which are too young to be replaced, so concurrent streams cannot
replace one another in a loop. A subject that really keeps more streams open than its cap rotates:
each reconnect replaces the oldest, at most the cap's worth per heartbeat interval, and no event is
lost since every stream resumes from its cursor.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from streaming import constants as c
from streaming.dynamo import key, query_items, serialize, unexpired_roles

GRACE_SECONDS = 60  # a lease outlives its stream's planned end by this
_OPEN = "sse"
_OPENED_AT = "opened_at"  # on a subject's lease: leases younger than `replaceable_after` stay


class StreamLeases:
    def __init__(self, client: Any, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def acquire(
        self, subject: str, limit: int, seconds: float, *, role: str, replaceable_after: float
    ) -> str | None:
        """A lease for a stream of `seconds`. A subject holding `limit` already makes room by losing
        its oldest leases; None when too few of them are `replaceable_after` seconds old."""
        now = self._clock()
        held = [item for item in self._leases(subject) if int(item[c.TTL_ATTRIBUTE]) > now]
        excess = len(held) - limit + 1
        if excess > 0:
            old_enough = [item["sk"] for item in held if item.get(_OPENED_AT, 0) <= now - replaceable_after]
            if len(old_enough) < excess:
                return None
            for oldest in old_enough[:excess]:  # in sort-key order: the first to expire first
                self.release(subject, oldest)
        expires_at = int(now + seconds) + GRACE_SECONDS
        lease = f"{expires_at:012d}#{uuid.uuid4()}"  # zero-padded: string order is time order
        listings = ((_subject_key(subject), {_OPENED_AT: int(now)}), (_OPEN, {"role": role}))
        for pk, attributes in listings:
            self._client.put_item(
                TableName=self._table,
                Item=serialize({"pk": pk, "sk": lease, **attributes, c.TTL_ATTRIBUTE: expires_at}),
            )
        return lease

    def held(self, subject: str, lease: str) -> bool:
        """Whether `lease` is still the subject's (not released, not replaced). A Query of its one key
        costs what a GetItem does, and the lease calls stay Query, PutItem and DeleteItem. Strongly
        consistent, so a lease just taken is never missed (its stream would end for nothing)."""
        found = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk = :lease",
            ExpressionAttributeValues=serialize({":pk": _subject_key(subject), ":lease": lease}),
            Select="COUNT",
            ConsistentRead=True,
        )
        return bool(found["Count"])

    def release(self, subject: str, lease: str) -> None:
        for pk in (_subject_key(subject), _OPEN):
            self._client.delete_item(TableName=self._table, Key=key(pk, lease))

    def open_roles(self) -> Iterator[str]:
        """The role of every stream whose lease has not expired."""
        return unexpired_roles(self._client, self._table, _OPEN, self._clock())

    def _leases(self, subject: str) -> Iterator[dict[str, Any]]:
        """The subject's lease items, oldest (first to expire) first."""
        return query_items(
            self._client,
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=serialize({":pk": _subject_key(subject)}),
            ConsistentRead=True,
        )


def _subject_key(subject: str) -> str:
    return f"sse#{subject}"
