"""Connection stats (the specification's getConnectionStats): the connections open on each transport,
by role, and how many are active (subscribed to at least one event type; an SSE stream always is).

Counted once a minute by the sweep from the partitions that list every connection (the expiry
records, the open streams and one per event type), never by a table scan; kept as one item in the
connections table, which `GET /stats` on the publish API reads, and written as gauges for the
dashboard.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from streaming import constants as c
from streaming.connections import ConnectionRegistry
from streaming.dynamo import key, serialize
from streaming.events import format_ts
from streaming.leases import StreamLeases
from streaming.observability import count

_KEY = (c.STATS_PARTITION, "connections")
KEEP_SECONDS = 3600  # stats a stopped sweep no longer refreshes disappear, rather than mislead


@dataclass(frozen=True)
class TransportStats:
    total: int
    active: int
    by_role: dict[str, int]


@dataclass(frozen=True)
class ConnectionStats:
    as_of: str
    by_transport: dict[str, TransportStats]
    subscriptions: dict[str, int]  # WebSocket connections subscribed to each event type

    @property
    def total(self) -> int:
        return sum(t.total for t in self.by_transport.values())

    def to_dict(self) -> dict[str, Any]:
        by_role: Counter[str] = Counter()
        for transport in self.by_transport.values():
            by_role.update(transport.by_role)
        return {
            "as_of": self.as_of,
            "total": self.total,
            "active": sum(t.active for t in self.by_transport.values()),
            "by_role": dict(sorted(by_role.items())),
            "by_transport": {name: asdict(t) for name, t in self.by_transport.items()},
            "subscriptions": self.subscriptions,
        }


def take(
    registry: ConnectionRegistry,
    leases: StreamLeases,
    event_types: Iterable[str],
    *,
    clock: Callable[[], float] = time.time,
) -> ConnectionStats:
    websocket = Counter(registry.expiry.open_roles())
    sse = Counter(leases.open_roles())
    subscribed: dict[str, set[str]] = {
        event_type: {subscriber.connection_id for subscriber in registry.subscribers(event_type)}
        for event_type in sorted(event_types)
    }
    active = set().union(*subscribed.values())
    return ConnectionStats(
        as_of=format_ts(int(clock() * 1000)),
        by_transport={
            "websocket": TransportStats(websocket.total(), len(active), dict(sorted(websocket.items()))),
            "sse": TransportStats(sse.total(), sse.total(), dict(sorted(sse.items()))),
        },
        subscriptions={event_type: len(ids) for event_type, ids in subscribed.items()},
    )


def record(stats: ConnectionStats, roles: Iterable[str]) -> None:
    """As gauges, every role's count included (zero too: a gauge that stops reporting reads as
    missing data, not as nobody connected)."""
    for transport, numbers in stats.by_transport.items():
        for role in sorted({*roles, *numbers.by_role}):
            count("ConnectionsOpen", numbers.by_role.get(role, 0), transport=transport, role=role)
        count("ConnectionsActive", numbers.active, transport=transport)


def save(client: Any, table: str, stats: ConnectionStats, *, clock: Callable[[], float] = time.time) -> None:
    pk, sk = _KEY
    item = {"pk": pk, "sk": sk, "stats": json.dumps(stats.to_dict())}
    client.put_item(TableName=table, Item=serialize({**item, c.TTL_ATTRIBUTE: int(clock()) + KEEP_SECONDS}))


def load(client: Any, table: str, *, clock: Callable[[], float] = time.time) -> Mapping[str, Any] | None:
    """The last stats saved, or None if there are none from the last hour."""
    response = client.get_item(TableName=table, Key=key(*_KEY))
    item = response.get("Item")
    if item is None or int(item[c.TTL_ATTRIBUTE]["N"]) <= clock():
        return None
    stats: Mapping[str, Any] = json.loads(item["stats"]["S"])
    return stats
