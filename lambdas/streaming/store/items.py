"""The items of the events table: the one mapping between an Envelope and its event item, the
stream head, the keys, and the expiry every item gets from the replay window."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streaming import constants as c
from streaming.cursor import Position
from streaming.events import Envelope

Item = dict[str, Any]
_STREAM_PREFIX = "stream#"


def stream_key(stream: str) -> str:
    """The partition of a stream: its head (sk 0) and its events (sk = seq)."""
    return f"{_STREAM_PREFIX}{stream}"


def claim_key(event_id: str) -> str:
    """The partition of an event id's claim (sk 0)."""
    return f"event#{event_id}"


def expires_at(epoch_ms: int, window_seconds: int) -> int:
    """The TTL of an item about something that happened at `epoch_ms`: the replay window later."""
    return epoch_ms // 1000 + window_seconds


def ints(mapping: Mapping[str, Any]) -> Position:
    return {name: int(value) for name, value in mapping.items()}


def _same(value: Any) -> Any:
    return value


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Attribute:
    field: str  # of Envelope
    name: str  # in the item
    to_item: Callable[[Any], Any] = _same
    from_item: Callable[[Any], Any] = _same  # numbers come back from DynamoDB as Decimal


# Every Envelope field but `stream` and `seq`, which are the item's key. A field that is None is
# left out of the item, and its default applies when the item is read back.
_ATTRIBUTES = (
    _Attribute("id", "id"),
    _Attribute("type", "type"),
    _Attribute("ts", "ts"),
    _Attribute("prev", "prev", from_item=int),
    _Attribute("type_heads", "heads", to_item=dict, from_item=ints),
    _Attribute("schema_version", "schema_version", from_item=int),
    _Attribute("producer", "producer"),
    _Attribute("data", "data", to_item=_compact_json, from_item=json.loads),
    _Attribute("key", "key"),
)


def event_item(envelope: Envelope, expires_at: int) -> Item:
    """The item that stores `envelope` (in the head's batch, then at its own key)."""
    item: Item = {c.PARTITION_KEY: stream_key(envelope.stream), c.SORT_KEY: envelope.seq}
    for attribute in _ATTRIBUTES:
        value = getattr(envelope, attribute.field)
        if value is not None:
            item[attribute.name] = attribute.to_item(value)
    item[c.TTL_ATTRIBUTE] = expires_at
    return item


def envelope_of(item: Item) -> Envelope:
    """The inverse of event_item."""
    fields = {a.field: a.from_item(item[a.name]) for a in _ATTRIBUTES if a.name in item}
    return Envelope(
        stream=item[c.PARTITION_KEY].removeprefix(_STREAM_PREFIX), seq=int(item[c.SORT_KEY]), **fields
    )


# What reads look at in an item before deciding to map it.


def event_id(item: Item) -> str:
    return str(item["id"])


def event_type(item: Item) -> str:
    return str(item["type"])


def event_seq(item: Item) -> int:
    return int(item[c.SORT_KEY])


def expired(item: Item, now_s: float) -> bool:
    return int(item[c.TTL_ATTRIBUTE]) <= now_s


@dataclass(frozen=True, slots=True)
class Head:
    """A stream's head item: the seq of its last event, the last seq of each type, and the items of
    its tail (`batch`: the stream's last events, of one commit or several), in seq order, ending at
    `seq`; their own items may not be written yet."""

    seq: int
    heads: Position
    batch: tuple[Item, ...] = ()

    @classmethod
    def of(cls, item: Item | None) -> Head:
        if not item:
            return cls(0, {})
        # `last`: one event, as heads written before batches were committed together hold it.
        batch = item.get("batch") or ([item["last"]] if "last" in item else [])
        return cls(int(item["seq"]), ints(item.get("heads", {})), tuple(batch))

    @property
    def first_in_batch(self) -> int:
        """The seq of the batch's first event: everything below it is in the table."""
        return self.seq - len(self.batch) + 1

    def find(self, id_: str, from_seq: int) -> Item | None:
        """The batch's event with id `id_` at `from_seq` or later, if it carries it."""
        return next((i for i in self.batch if event_seq(i) >= from_seq and event_id(i) == id_), None)

    def in_batch(self, seq: int) -> Item | None:
        return self.batch[seq - self.first_in_batch] if self.first_in_batch <= seq <= self.seq else None
