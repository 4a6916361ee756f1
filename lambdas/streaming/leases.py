"""Open SSE streams per token subject, counted so that one token cannot hold every stream the
deployment allows (`sse.reserved_concurrency`). Each open stream holds a lease in the connections
table, `pk="sse#<subject>"`, `sk=<lease id>`, and is listed with its role under `pk="sse"`, `sk=<lease
id>` (so the open streams are counted with one Query). The lease id starts with the time both expire,
shortly after the stream's planned end (so a stream whose end was never noticed frees its lease by
itself); both are deleted when the stream ends.

The count is a soft cap: two streams opened at the same instant may both get the last lease.
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


class StreamLeases:
    def __init__(self, client: Any, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def acquire(self, subject: str, limit: int, seconds: float, *, role: str) -> str | None:
        """A lease for a stream of `seconds`, or None when the subject holds `limit` already."""
        now = self._clock()
        held = sum(
            1
            for item in query_items(
                self._client,
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues=serialize({":pk": _subject_key(subject)}),
                ConsistentRead=True,
            )
            if int(item[c.TTL_ATTRIBUTE]) > now
        )
        if held >= limit:
            return None
        expires_at = int(now + seconds) + GRACE_SECONDS
        lease = f"{expires_at:012d}#{uuid.uuid4()}"  # zero-padded: string order is time order
        for pk, attributes in ((_subject_key(subject), {}), (_OPEN, {"role": role})):
            self._client.put_item(
                TableName=self._table,
                Item=serialize({"pk": pk, "sk": lease, **attributes, c.TTL_ATTRIBUTE: expires_at}),
            )
        return lease

    def release(self, subject: str, lease: str) -> None:
        for pk in (_subject_key(subject), _OPEN):
            self._client.delete_item(TableName=self._table, Key=key(pk, lease))

    def open_roles(self) -> Iterator[str]:
        """The role of every stream whose lease has not expired."""
        return unexpired_roles(self._client, self._table, _OPEN, self._clock())


def _subject_key(subject: str) -> str:
    return f"sse#{subject}"
