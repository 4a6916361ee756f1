"""Open SSE streams per token subject, counted so that one token cannot hold every stream the
deployment allows (`sse.reserved_concurrency`). Each open stream holds a lease in the connections
table, `pk="sse#<subject>"`, `sk=<lease id>`, that expires shortly after the stream's planned end (so a
stream whose end was never noticed frees its lease by itself) and is deleted when the stream ends.

The count is a soft cap: two streams opened at the same instant may both get the last lease.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from streaming import constants as c
from streaming.dynamo import deserialize, key, serialize

GRACE_SECONDS = 60  # a lease outlives its stream's planned end by this


class StreamLeases:
    def __init__(self, client: Any, table: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table
        self._clock = clock

    def acquire(self, subject: str, limit: int, seconds: float) -> str | None:
        """A lease for a stream of `seconds`, or None when the subject holds `limit` already."""
        now = self._clock()
        response = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=serialize({":pk": _subject_key(subject)}),
            ConsistentRead=True,
        )
        held = sum(1 for raw in response.get("Items", []) if int(deserialize(raw)[c.TTL_ATTRIBUTE]) > now)
        if held >= limit:
            return None
        lease = str(uuid.uuid4())
        expires_at = int(now + seconds) + GRACE_SECONDS
        self._client.put_item(
            TableName=self._table,
            Item=serialize({"pk": _subject_key(subject), "sk": lease, c.TTL_ATTRIBUTE: expires_at}),
        )
        return lease

    def release(self, subject: str, lease: str) -> None:
        self._client.delete_item(TableName=self._table, Key=key(_subject_key(subject), lease))


def _subject_key(subject: str) -> str:
    return f"sse#{subject}"
