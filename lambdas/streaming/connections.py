"""The connection registry: who is connected, with which role, subscribed to which event types.

Layout (partition key `pk` string, sort key `sk` string, TTL attribute `expires_at`):

    pk="connection#<id>", sk="meta"   the connection: role, subject, subscribed types, token expiry
    pk="type#<event type>", sk=<id>   one subscription, so fan-out finds a type's connections by Query
    pk="expiry", sk="<expires_at>#<id>" when the connection must be closed, and its role: one Query finds
                                      the due ones, or counts the open ones (API Gateway rate limits new
                                      connections far below one partition's write limit)

`$disconnect` is best effort, so every item expires (TTL) a little after API Gateway's 2-hour limit;
lookups also drop expired items themselves, since TTL deletes lazily.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from streaming import constants as c
from streaming.dynamo import deserialize, key, query_items, serialize, unexpired_roles
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
        self, client: Any, table_name: str, roles: RoleMatrix, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._table = table_name
        self._roles = roles
        self._clock = clock

    def connect(self, connection_id: str, subject: str, role: str, token_expires_at: int) -> Connection:
        """Register a connection. It expires at the earlier of its token's expiry and API Gateway's
        connection limit (plus a margin), whichever comes first."""
        expires_at = min(token_expires_at, int(self._clock()) + c.CONNECTION_TTL_SECONDS)
        self._put(
            {
                "pk": _connection_key(connection_id),
                "sk": "meta",
                "subject": subject,
                "role": role,
                c.TTL_ATTRIBUTE: expires_at,
            }
        )
        # Kept a day past the expiry, so a sweep that ran late still finds it.
        self._put(
            {
                "pk": _EXPIRY,
                "sk": _expiry_key(expires_at, connection_id),
                "role": role,
                c.TTL_ATTRIBUTE: expires_at + 86400,
            }
        )
        return Connection(connection_id, subject, role, frozenset(), expires_at)

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
                            c.TTL_ATTRIBUTE: connection.expires_at,
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
            expiry = _expiry_key(int(item[c.TTL_ATTRIBUTE]), connection_id)
            self._client.delete_item(TableName=self._table, Key=key(_EXPIRY, expiry))
        self._client.delete_item(TableName=self._table, Key=key(_connection_key(connection_id), "meta"))

    def due(self, limit: int = 1000) -> list[tuple[str, str]]:
        """Connections whose token (or API Gateway's limit) has expired, oldest first, each with its
        expiry record's key: drop that with `forget_expiry` once the connection is closed."""
        response = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND sk < :now",
            ExpressionAttributeValues=serialize({":pk": _EXPIRY, ":now": f"{int(self._clock()) + 1:012d}"}),
            Limit=limit,
        )
        return [(raw["sk"]["S"].split("#", 1)[1], raw["sk"]["S"]) for raw in response.get("Items", [])]

    def open_roles(self) -> Iterator[str]:
        """The role of every connection not yet expired."""
        return unexpired_roles(self._client, self._table, _EXPIRY, self._clock())

    def forget_expiry(self, expiry_key: str) -> None:
        self._client.delete_item(TableName=self._table, Key=key(_EXPIRY, expiry_key))

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
            if int(item[c.TTL_ATTRIBUTE]) > now and event_type in types:  # not a tombstone
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
        return item if int(item[c.TTL_ATTRIBUTE]) > self._clock() else None

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
        int(item[c.TTL_ATTRIBUTE]),
    )


def _number(value: float) -> Decimal:
    """DynamoDB numbers: millisecond precision is plenty for a rate limit."""
    return Decimal(str(round(value, 3)))


_EXPIRY = "expiry"
_NONE = "-"  # the types of a connection subscribed to nothing (no event type has this name)


def _expiry_key(expires_at: int, connection_id: str) -> str:
    return f"{expires_at:012d}#{connection_id}"  # zero-padded: string order is time order


def _connection_key(connection_id: str) -> str:
    return f"connection#{connection_id}"


def _type_key(event_type: str) -> str:
    return f"type#{event_type}"
