"""The connection registry: who is connected, with which role, subscribed to which event types.

Layout (partition key `pk` string, sort key `sk` string, TTL attribute `expires_at`):

    pk="connection#<id>", sk="meta"   the connection: role, subject, subscribed types, token expiry
    pk="type#<event type>", sk=<id>   one subscription, so fan-out finds a type's connections by Query
    pk="expiry", sk="<expires_at>#<id>" when the connection must be closed (streaming.expiry)

A connection expires (`closes_at`) when its token does, and at the latest one sweep before API
Gateway's 2-hour cut. `$disconnect` is best effort, so every item also expires (TTL) a little after
its connection; lookups drop expired connections themselves, since TTL deletes lazily.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from streaming import constants as c
from streaming.dynamo import deserialize, key, query_items, serialize
from streaming.expiry import ExpiryRecords, expiry_key, plan
from streaming.ratelimit import Admission, TokenBucket
from streaming.roles import RoleMatrix


@dataclass(frozen=True, slots=True)
class Connection:
    connection_id: str
    subject: str
    role: str
    types: frozenset[str]
    expires_at: int


@dataclass(frozen=True, slots=True)
class Subscriber:
    connection_id: str
    role: str
    types: frozenset[str]  # everything the connection subscribes to: each event's `prev` is among them


class ConnectionRegistry:
    def __init__(
        self,
        client: Any,
        table_name: str,
        roles: RoleMatrix,
        *,
        clock: Callable[[], float] = time.time,
        max_connection_seconds: int = c.MAX_CONNECTION_SECONDS,
    ) -> None:
        self._client = client
        self._table = table_name
        self._roles = roles
        self._clock = clock
        self._max_connection_seconds = max_connection_seconds
        self.expiry = ExpiryRecords(client, table_name, clock=clock)

    def connect(self, connection_id: str, subject: str, role: str, token_expires_at: int) -> Connection:
        """Register a connection, and plan its end (streaming.expiry)."""
        planned = plan(int(self._clock()), token_expires_at, self._max_connection_seconds)
        self._put(
            {
                "pk": _connection_key(connection_id),
                "sk": "meta",
                "subject": subject,
                "role": role,
                _CLOSES_AT: planned.expires_at,
                c.TTL_ATTRIBUTE: planned.expires_at + c.CONNECTION_RECORD_GRACE_SECONDS,
            }
        )
        self.expiry.put(connection_id, role, planned)
        return Connection(connection_id, subject, role, frozenset(), planned.expires_at)

    def get(self, connection_id: str) -> Connection | None:
        item = self._meta(connection_id)
        return None if item is None else _connection(connection_id, item)

    def subscribe(self, connection: Connection, requested: Iterable[str]) -> frozenset[str]:
        """Subscribe to what the role may see of `requested`; returns all the connection's types now."""
        granted = self._roles.visible(connection.role, requested)
        if not granted:
            return connection.types
        types, version = self._update_types(connection.connection_id, "ADD", granted)
        self._write_subscriptions(connection, types, version, first=connection.types)
        return types

    def unsubscribe(self, connection: Connection, types: Iterable[str]) -> frozenset[str]:
        dropped = connection.types & frozenset(types)
        if not dropped:
            return connection.types
        remaining, version = self._update_types(connection.connection_id, "DELETE", dropped)
        self._write_subscriptions(connection, remaining, version, first=remaining, retired=dropped)
        return remaining

    def _write_subscriptions(
        self,
        connection: Connection,
        types: frozenset[str],
        version: int,
        *,
        first: frozenset[str],
        retired: frozenset[str] = frozenset(),
    ) -> None:
        """One item per type, each listing all the connection's types, so fan-out knows every type a
        connection gets from the item it finds it by. Items of `first` are written first: an item of
        an added type never lists more than an older item does, so a `prev` errs high, never low.
        A retired type's item stays as a tombstone listing the types left (fan-out skips it), so a
        subscribe racing the unsubscribe cannot bring it back. Versioned: the later change stays."""
        for event_type in [*sorted(first & types), *sorted(types - first), *sorted(retired)]:
            with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
                self._client.put_item(
                    TableName=self._table,
                    Item=serialize(
                        {
                            "pk": _type_key(event_type),
                            "sk": connection.connection_id,
                            "role": connection.role,
                            "types": set(types) or {_NONE},  # a string set cannot be empty
                            "version": version,
                            _CLOSES_AT: connection.expires_at,
                            c.TTL_ATTRIBUTE: connection.expires_at + c.CONNECTION_RECORD_GRACE_SECONDS,
                        }
                    ),
                    ConditionExpression="attribute_not_exists(pk) OR version < :version",
                    ExpressionAttributeValues=serialize({":version": version}),
                )

    def remove(self, connection_id: str, subscribed: Iterable[str] = ()) -> None:
        """Forget exactly this connection: its subscriptions (those its record lists, and `subscribed`,
        where the caller found it), then itself. On $disconnect, a 410 or expiry."""
        response = self._client.get_item(
            TableName=self._table, Key=key(_connection_key(connection_id), "meta"), ConsistentRead=True
        )
        item = deserialize(response["Item"]) if "Item" in response else {}
        listed = set(item.get("types", set())) | set(item.get("retired", set())) | set(subscribed)
        for event_type in sorted(listed):
            self._client.delete_item(TableName=self._table, Key=key(_type_key(event_type), connection_id))
        if c.TTL_ATTRIBUTE in item:
            self.expiry.forget(expiry_key(_closes_at(item), connection_id))
        self._client.delete_item(TableName=self._table, Key=key(_connection_key(connection_id), "meta"))

    def subscribers(self, event_type: str) -> Iterator[Subscriber]:
        """Connections subscribed to `event_type` whose role may still see it (re-checked here)."""
        now = self._clock()
        for item in query_items(
            self._client,
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": _type_key(event_type)}},
            ConsistentRead=True,  # a stale item could list fewer types: a `prev` too low
        ):
            allowed = self._roles.allowed(item["role"])
            # An item from before items listed their connection's types: all the role's, so that
            # `prev` errs high (a replay) and never low (a skipped event).
            types = frozenset(item.get("types", allowed)) & allowed
            if _closes_at(item) > now and event_type in types:  # not a tombstone
                yield Subscriber(item["sk"], item["role"], types)

    def admit(self, connection_id: str, bucket: TokenBucket) -> tuple[Connection, Admission]:
        """Take a token for one inbound message, and mark the connection greeted. Concurrent
        invocations for the same connection are serialized by a condition on the bucket's last update.
        LookupError when the connection is gone or has expired."""
        for _ in range(5):
            item = self._meta(connection_id)
            if item is None:
                raise LookupError(f"connection {connection_id} is gone or expired")
            connection = _connection(connection_id, item)
            now = self._clock()
            last = item.get("bucket_at")
            allowed, tokens = bucket.take(
                float(item.get("bucket_tokens", bucket.burst)), float(last) if last is not None else now, now
            )
            # Refusals count until the bucket has refilled completely: a client that keeps sending
            # faster than the rate collects strikes even if some of its messages get through.
            strikes = int(item.get("strikes", 0))
            if not allowed:
                strikes += 1
            elif tokens >= bucket.burst - 1:
                strikes = 0
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=key(_connection_key(connection_id), "meta"),
                    UpdateExpression="SET bucket_tokens = :tokens, bucket_at = :now, strikes = :strikes, "
                    "greeted = :true",
                    ConditionExpression="attribute_not_exists(bucket_at)"
                    if last is None
                    else "bucket_at = :last",
                    ExpressionAttributeValues=serialize(
                        {
                            ":tokens": _number(tokens),
                            ":now": _number(now),
                            ":strikes": strikes,
                            ":true": True,
                            **({":last": last} if last is not None else {}),
                        }
                    ),
                )
            except self._client.exceptions.ConditionalCheckFailedException:
                continue  # another message of this connection took a token meanwhile: read again
            return connection, Admission(allowed, strikes, first=not item.get("greeted"))
        return connection, Admission(False, 0)  # contended beyond reason: refuse this one, no strike

    def _meta(self, connection_id: str) -> dict[str, Any] | None:
        """The connection's item, or None when it is gone or past its expiry (TTL deletes lazily)."""
        response = self._client.get_item(
            TableName=self._table, Key=key(_connection_key(connection_id), "meta"), ConsistentRead=True
        )
        if "Item" not in response:
            return None
        item = deserialize(response["Item"])
        return item if _closes_at(item) > self._clock() else None

    def _update_types(
        self, connection_id: str, action: str, types: frozenset[str]
    ) -> tuple[frozenset[str], int]:
        """Add or delete subscribed types; the connection's types after that, and their version."""
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=key(_connection_key(connection_id), "meta"),
                # Retired types are kept too, so `remove` finds their tombstones.
                UpdateExpression="ADD #types :types, types_version :one"
                if action == "ADD"
                else "DELETE #types :types ADD retired :types, types_version :one",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#types": "types"},
                ExpressionAttributeValues={":types": {"SS": sorted(types)}, ":one": {"N": "1"}},
                ReturnValues="ALL_NEW",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise LookupError(f"connection {connection_id} is gone") from None
        item = deserialize(response["Attributes"])
        return frozenset(item.get("types", set())), int(item["types_version"])

    def _put(self, item: dict[str, Any]) -> None:
        self._client.put_item(TableName=self._table, Item=serialize(item))


def _connection(connection_id: str, item: dict[str, Any]) -> Connection:
    return Connection(
        connection_id,
        item["subject"],
        item["role"],
        frozenset(item.get("types", set())),
        _closes_at(item),
    )


def _closes_at(item: dict[str, Any]) -> int:
    """When the item's connection expires; items written before `closes_at` expired at their TTL."""
    return int(item.get(_CLOSES_AT, item[c.TTL_ATTRIBUTE]))


def _number(value: float) -> Decimal:
    """DynamoDB numbers: millisecond precision is plenty for a rate limit."""
    return Decimal(str(round(value, 3)))


_CLOSES_AT = "closes_at"
_NONE = "-"  # the types of a connection subscribed to nothing (no event type has this name)


def _connection_key(connection_id: str) -> str:
    return f"connection#{connection_id}"


def _type_key(event_type: str) -> str:
    return f"type#{event_type}"
