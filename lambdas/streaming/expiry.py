"""The planned end of each WebSocket connection: it expires when its token does, and at the latest
`max_connection_seconds` after it opened (one sweep before API Gateway's 2-hour cut), and is told to
`reconnect` before then (docs/protocol.md, "Lifetime").

One record per connection in the connections table's expiry partition (a Query of it finds the due
connections, the ones to notify, or counts the open ones; API Gateway rate limits new connections
far below one partition's write limit):

    pk="expiry", sk="<expires_at>#<id>"   its role, when to notify it and why, and `noticed_at` once it was
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streaming import constants as c
from streaming.dynamo import key, query_items, serialize, unexpired_roles

TOKEN_EXPIRING = "token_expiring"  # noqa: S105 - a reason, not a secret
CONNECTION_LIMIT = "connection_limit"
_KEPT_SECONDS = 86400  # a record outlives its expiry by a day, so a sweep that ran late still finds it


@dataclass(frozen=True, slots=True)
class Plan:
    expires_at: int
    notice_at: int  # when the connection is told to reconnect
    reason: str  # TOKEN_EXPIRING or CONNECTION_LIMIT


def plan(now: int, token_expires_at: int, max_connection_seconds: int) -> Plan:
    """`RECONNECT_NOTICE_SECONDS` before the expiry, or halfway through a shorter life: a connection is
    never told to leave the moment it came."""
    limit = now + max_connection_seconds
    expires_at = min(token_expires_at, limit)
    notice_at = expires_at - min(c.RECONNECT_NOTICE_SECONDS, (expires_at - now) // 2)
    return Plan(expires_at, notice_at, TOKEN_EXPIRING if token_expires_at <= limit else CONNECTION_LIMIT)


@dataclass(frozen=True, slots=True)
class Notice:
    """A connection to tell that it will be closed `at` (epoch seconds), and why."""

    connection_id: str
    expiry_key: str
    reason: str
    at: int


class ExpiryRecords:
    def __init__(self, client: Any, table_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock

    def put(self, connection_id: str, role: str, planned: Plan) -> None:
        item = {
            "pk": c.EXPIRY_PARTITION,
            "sk": expiry_key(planned.expires_at, connection_id),
            "role": role,
            "notice_at": planned.notice_at,
            "reason": planned.reason,
            c.TTL_ATTRIBUTE: planned.expires_at + _KEPT_SECONDS,
        }
        self._client.put_item(TableName=self._table, Item=serialize(item))

    def due(self, limit: int = 1000) -> list[tuple[str, str]]:
        """Connections that have expired, oldest first, each with its expiry record's key: drop that
        with `forget` once the connection is closed."""
        response = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk < :now",
            ExpressionAttributeValues=serialize(
                {":pk": c.EXPIRY_PARTITION, ":now": f"{int(self._clock()) + 1:012d}"}
            ),
            Limit=limit,
        )
        return [(_connection_of(raw["sk"]["S"]), raw["sk"]["S"]) for raw in response.get("Items", [])]

    def forget(self, record_key: str) -> None:
        self._client.delete_item(TableName=self._table, Key=key(c.EXPIRY_PARTITION, record_key))

    def open_roles(self) -> Iterator[str]:
        """The role of every connection not yet expired."""
        return unexpired_roles(self._client, self._table, c.EXPIRY_PARTITION, self._clock())

    def notices_due(self) -> list[Notice]:
        """Connections to tell now that they will be closed soon: expiring within the notice window,
        past their notice time, not told yet. One Query of the expiry partition."""
        now = int(self._clock())
        items = query_items(
            self._client,
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :after AND :until",
            FilterExpression="notice_at <= :now AND attribute_not_exists(noticed_at)",
            ExpressionAttributeValues=serialize(
                {
                    ":pk": c.EXPIRY_PARTITION,
                    ":after": f"{now + 1:012d}",  # not yet due: the due ones are closed instead
                    ":until": f"{now + c.RECONNECT_NOTICE_SECONDS:012d}~",  # "~" sorts after "#<id>"
                    ":now": now,
                }
            ),
        )
        return [
            Notice(_connection_of(i["sk"]), i["sk"], i["reason"], int(i["sk"].split("#")[0])) for i in items
        ]

    def claim(self, notice: Notice) -> bool:
        """Mark the notice sent; False if another sweep did (or the connection is gone meanwhile)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key(c.EXPIRY_PARTITION, notice.expiry_key),
                UpdateExpression="SET noticed_at = :now",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(noticed_at)",
                ExpressionAttributeValues=serialize({":now": int(self._clock())}),
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release(self, notice: Notice) -> None:
        """The notice could not be sent: the next sweep tries again (unless the connection is gone)."""
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                TableName=self._table,
                Key=key(c.EXPIRY_PARTITION, notice.expiry_key),
                UpdateExpression="REMOVE noticed_at",
                ConditionExpression="attribute_exists(pk)",
            )


def expiry_key(expires_at: int, connection_id: str) -> str:
    return f"{expires_at:012d}#{connection_id}"  # zero-padded: string order is time order


def _connection_of(record_key: str) -> str:
    return record_key.split("#", 1)[1]
