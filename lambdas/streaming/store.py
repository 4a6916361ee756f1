"""The event store: one DynamoDB table holding, per stream, a gap-free sequence of events.

Layout (partition key `pk` string, sort key `sk` number, TTL attribute `expires_at`):

    pk="stream#<name>", sk=0      the stream head: last known seq and the last seq of each type (no TTL)
    pk="stream#<name>", sk=<seq>  one event, seq >= 1
    pk="event#<id>",    sk=0      the idempotency marker of an event id: its stream and seq once stored

Appending claims the id (conditional put of the marker), then places the event at head+1 with a
conditional put. If that slot is taken, the put fails and returns the occupant, and the publisher tries
the next slot. A put at n+1 is only ever tried after n was seen occupied, so the sequence has no holes,
whatever publishers crash where; no transaction and no clock is involved in that guarantee. The head is
advanced after each put; it may lag, which only costs the next publisher a failed put.

Every write is a single-item conditional write: DynamoDB serializes those per item, so concurrent
publishers on other processes or machines need no coordination beyond the table.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from streaming import constants as c
from streaming.errors import ErrorCode, StreamingError
from streaming.events import Envelope, NewEvent, format_ts

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of appending one event; `duplicate` when the id was already stored."""

    id: str
    type: str
    stream: str
    seq: int
    ts: str
    duplicate: bool
    conflicts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "stream": self.stream,
            "seq": self.seq,
            "ts": self.ts,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True)
class Page:
    """A replay answer. `cursor` resumes after it; `more` says another call would return more;
    `truncated` says events after the given cursor have already left the replay window."""

    events: list[Envelope]
    cursor: dict[str, int]
    more: bool = False
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class _Head:
    seq: int
    heads: dict[str, int]


@dataclass
class _Scan:
    """What one stream contributed to a replay: every scanned seq, and the visible events."""

    start: int
    last_seq: int
    events: list[Envelope]
    more: bool = False
    truncated: bool = False


class EventStore:
    def __init__(
        self,
        client: Any,
        table_name: str,
        streams_by_type: Mapping[str, str],
        replay_window_seconds: int,
        *,
        clock: Callable[[], float] = time.time,
        claim_timeout_seconds: float = 60.0,
        pending_wait_seconds: float = 2.0,
        max_place_attempts: int = 200,
        max_scan: int = 1000,
    ) -> None:
        self._client = client
        self._table = table_name
        self._streams_by_type = dict(streams_by_type)
        self._window = replay_window_seconds
        self._clock = clock
        self._claim_timeout_ms = int(claim_timeout_seconds * 1000)
        self._pending_wait = pending_wait_seconds
        self._max_attempts = max_place_attempts
        self._max_scan = max_scan
        # Last position this instance saw per stream: a hint that saves the head read; a stale one
        # only costs a failed put.
        self._positions: dict[str, _Head] = {}

    # -- appending ---------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], producer: str) -> list[Appended]:
        """Store each event once, in order. Re-appending a stored id returns its original seq."""
        return [self._append_one(event, event.producer or producer) for event in events]

    def _append_one(self, event: NewEvent, producer: str) -> Appended:
        stream = self._streams_by_type[event.type]
        head = self._positions.get(stream) or self._read_head(stream)
        now_ms = self._now_ms()
        claim = {
            c.PARTITION_KEY: _marker_key(event.id),
            c.SORT_KEY: 0,
            "stream": stream,
            "type": event.type,
            "digest": event.digest(),
            "from_seq": head.seq + 1,
            "claimed_at": now_ms,
            c.TTL_ATTRIBUTE: now_ms // 1000 + self._window,
        }
        existing = self._put_if_absent(claim)
        if existing is not None:
            return self._resolve_claimed(event, producer, existing)
        return self._place_and_commit(event, producer, stream, head)

    def _resolve_claimed(self, event: NewEvent, producer: str, marker: Item) -> Appended:
        """The id was claimed before: return the stored result, wait for an in-flight publish,
        or take over a claim whose publisher died before committing it."""
        if marker["digest"] != event.digest():
            raise StreamingError(
                ErrorCode.ID_CONFLICT, f"event id {event.id} was already used for a different event"
            )
        deadline = time.monotonic() + self._pending_wait
        while "seq" not in marker:
            if self._now_ms() - int(marker["claimed_at"]) > self._claim_timeout_ms:
                return self._take_over(event, producer, marker)
            if time.monotonic() > deadline:
                raise StreamingError(
                    ErrorCode.PUBLISH_IN_PROGRESS,
                    f"event {event.id} is being stored by another request; retry",
                )
            time.sleep(0.05)
            marker = self._get(_marker_key(event.id), 0) or marker
        return Appended(
            event.id, event.type, marker["stream"], int(marker["seq"]), marker["ts"], duplicate=True
        )

    def _take_over(self, event: NewEvent, producer: str, marker: Item) -> Appended:
        stream = marker["stream"]
        stored = self._find_by_id(stream, int(marker["from_seq"]), event.id)
        if stored is not None:
            self._commit_marker(event.id, stored.seq, stored.ts)
            return Appended(event.id, event.type, stream, stored.seq, stored.ts, duplicate=True)
        head = self._read_head(stream)
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(_marker_key(event.id), 0),
                UpdateExpression="SET claimed_at = :now, from_seq = :from",
                ConditionExpression="claimed_at = :old AND attribute_not_exists(seq)",
                ExpressionAttributeValues=_values(
                    {":now": self._now_ms(), ":from": head.seq + 1, ":old": marker["claimed_at"]}
                ),
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            current = self._get(_marker_key(event.id), 0)
            if current is None:
                raise StreamingError(ErrorCode.PUBLISH_IN_PROGRESS, "claim changed; retry") from None
            return self._resolve_claimed(event, producer, current)
        return self._place_and_commit(event, producer, stream, head)

    def _place_and_commit(self, event: NewEvent, producer: str, stream: str, head: _Head) -> Appended:
        envelope, heads, conflicts = self._place(event, producer, stream, head)
        self._positions[stream] = _Head(envelope.seq, heads)
        self._commit_marker(event.id, envelope.seq, envelope.ts)
        self._advance_head(stream, envelope.seq, heads)
        return Appended(
            event.id, event.type, stream, envelope.seq, envelope.ts, duplicate=False, conflicts=conflicts
        )

    def _place(
        self, event: NewEvent, producer: str, stream: str, head: _Head
    ) -> tuple[Envelope, dict[str, int], int]:
        """Put the event into the first free slot after the head."""
        seq, heads = head.seq + 1, head.heads
        for conflicts in range(self._max_attempts):
            now_ms = self._now_ms()
            envelope = Envelope(
                id=event.id,
                type=event.type,
                stream=stream,
                seq=seq,
                prev=heads.get(event.type, 0),
                ts=format_ts(now_ms),
                schema_version=event.schema_version,
                data=event.data,
                producer=producer,
                key=event.key,
            )
            new_heads = {**heads, event.type: seq}
            started = time.monotonic()
            occupant = self._put_if_absent(_event_item(envelope, new_heads, now_ms, self._window))
            if occupant is None:
                return envelope, new_heads, conflicts
            # Lost to a publisher in lock-step with this one: wait a random part of a few round
            # trips, so the losers of this slot do not all collide again on the next one.
            round_trip = time.monotonic() - started
            time.sleep(random.uniform(0, round_trip * min(2 * (conflicts + 1), 16)))  # noqa: S311
            # Taken: try the slot after the occupant. A publisher that keeps losing has fallen
            # behind; it backs off with jitter and jumps to the head (which lags by in-flight
            # publishes at most) instead of walking the stream slot by slot.
            seq, heads = seq + 1, _ints(occupant.get("heads", {}))
            if conflicts % 4 == 3:
                head = self._read_head(stream)
                if head.seq >= seq:
                    seq, heads = head.seq + 1, head.heads
            if not heads:  # a backend that did not return the occupant
                heads = _ints((self._get(_stream_key(stream), seq - 1) or {}).get("heads", {}))
        raise StreamingError(
            ErrorCode.STREAM_CONTENDED, f"stream {stream} is too contended right now; retry with the same id"
        )

    def _commit_marker(self, event_id: str, seq: int, ts: str) -> None:
        self._client.update_item(
            TableName=self._table,
            Key=_key(_marker_key(event_id), 0),
            UpdateExpression="SET seq = :seq, ts = :ts",
            ExpressionAttributeValues=_values({":seq": seq, ":ts": ts}),
        )

    def _advance_head(self, stream: str, seq: int, heads: dict[str, int]) -> None:
        # Losing the condition means another publisher already moved the head further.
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                TableName=self._table,
                Key=_key(_stream_key(stream), 0),
                UpdateExpression="SET seq = :seq, heads = :heads",
                ConditionExpression="attribute_not_exists(seq) OR seq < :seq",
                ExpressionAttributeValues=_values({":seq": seq, ":heads": heads}),
            )

    def _read_head(self, stream: str) -> _Head:
        item = self._get(_stream_key(stream), 0)
        if item is None:
            return _Head(0, {})
        return _Head(int(item["seq"]), _ints(item.get("heads", {})))

    def _find_by_id(self, stream: str, from_seq: int, event_id: str) -> Envelope | None:
        for item in self._query(stream, "sk >= :from", {":from": from_seq}, forward=True, filter_id=event_id):
            return _envelope(item)
        return None

    # -- reading -----------------------------------------------------------------------------------

    def after(self, cursor: Mapping[str, int], types: frozenset[str], limit: int) -> Page:
        """Events of `types` after `cursor`, oldest first, at most `limit`; expired events excluded."""
        now_s = self._clock()
        scans = {
            stream: self._scan_forward(stream, cursor.get(stream, 0), types, limit, now_s)
            for stream in self._streams_of(types)
        }
        merged = sorted(
            (event for scan in scans.values() for event in scan.events), key=lambda e: (e.ts, e.stream, e.seq)
        )
        served, held_back = merged[:limit], merged[limit:]
        new_cursor = dict(cursor)
        for stream, scan in scans.items():
            first_held = min((e.seq for e in held_back if e.stream == stream), default=None)
            new_cursor[stream] = scan.last_seq if first_held is None else first_held - 1
        return Page(
            events=served,
            cursor=new_cursor,
            more=bool(held_back) or any(scan.more for scan in scans.values()),
            truncated=any(scan.truncated for scan in scans.values()),
        )

    def latest(self, types: frozenset[str], count: int) -> Page:
        """The last `count` events of `types` (oldest first), and a cursor at the tail of each stream."""
        now_s = self._clock()
        newest: list[Envelope] = []
        tail: dict[str, int] = {}
        for stream in self._streams_of(types):
            found = 0
            for scanned, item in enumerate(self._query(stream, "sk > :zero", {":zero": 0}, forward=False)):
                tail.setdefault(stream, int(item[c.SORT_KEY]))
                if found >= count or scanned >= self._max_scan:
                    break
                if item["type"] in types and int(item[c.TTL_ATTRIBUTE]) > now_s:
                    newest.append(_envelope(item))
                    found += 1
            tail.setdefault(stream, 0)
        newest.sort(key=lambda e: (e.ts, e.stream, e.seq), reverse=True)
        return Page(events=list(reversed(newest[:count])), cursor=tail)

    def heads(self) -> dict[str, int]:
        """The last seq of every stream (0 for an empty stream)."""
        return {
            stream: next(
                (
                    int(item[c.SORT_KEY])
                    for item in self._query(stream, "sk > :zero", {":zero": 0}, forward=False)
                ),
                0,
            )
            for stream in sorted(set(self._streams_by_type.values()))
        }

    def _scan_forward(
        self, stream: str, start: int, types: frozenset[str], limit: int, now_s: float
    ) -> _Scan:
        scan = _Scan(start=start, last_seq=start, events=[])
        for scanned, item in enumerate(self._query(stream, "sk > :start", {":start": start}, forward=True)):
            if len(scan.events) >= limit or scanned >= self._max_scan:
                scan.more = True
                break
            seq = int(item[c.SORT_KEY])
            expired = int(item[c.TTL_ATTRIBUTE]) <= now_s
            # A missing or expired seq after a given cursor can only be an event TTL removed:
            # the sequence itself has no holes.
            if start and (seq != scan.last_seq + 1 or expired):
                scan.truncated = True
            scan.last_seq = seq
            if not expired and item["type"] in types:
                scan.events.append(_envelope(item))
        return scan

    # -- DynamoDB helpers --------------------------------------------------------------------------

    def _streams_of(self, types: frozenset[str]) -> list[str]:
        return sorted({self._streams_by_type[t] for t in types if t in self._streams_by_type})

    def _query(
        self,
        stream: str,
        sort_condition: str,
        values: Mapping[str, Any],
        *,
        forward: bool,
        filter_id: str | None = None,
        limit: int = 100,
    ) -> Iterator[Item]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": f"pk = :pk AND {sort_condition}",
            "ExpressionAttributeValues": _values({":pk": _stream_key(stream), **values}),
            "ConsistentRead": True,
            "ScanIndexForward": forward,
            "Limit": limit,
        }
        if filter_id is not None:
            request["FilterExpression"] = "id = :id"
            request["ExpressionAttributeValues"][":id"] = {"S": filter_id}
        while True:
            response = self._client.query(**request)
            for raw in response.get("Items", []):
                yield _deserialize(raw)
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _get(self, pk: str, sk: int) -> Item | None:
        response = self._client.get_item(TableName=self._table, Key=_key(pk, sk), ConsistentRead=True)
        return _deserialize(response["Item"]) if "Item" in response else None

    def _put_if_absent(self, item: Item) -> Item | None:
        """Put the item unless its key exists; return the existing item (or {}) when it does."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item={name: _serializer.serialize(value) for name, value in item.items()},
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._client.exceptions.ConditionalCheckFailedException as error:
            return _deserialize(error.response.get("Item", {}))
        return None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _stream_key(stream: str) -> str:
    return f"stream#{stream}"


def _marker_key(event_id: str) -> str:
    return f"event#{event_id}"


def _key(pk: str, sk: int) -> dict[str, Any]:
    return {c.PARTITION_KEY: {"S": pk}, c.SORT_KEY: {"N": str(sk)}}


def _values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items()}


def _deserialize(raw: Mapping[str, Any]) -> Item:
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}


def _ints(mapping: Mapping[str, Any]) -> dict[str, int]:
    return {name: int(value) for name, value in mapping.items()}


def _event_item(envelope: Envelope, heads: dict[str, int], now_ms: int, window_seconds: int) -> Item:
    item: Item = {
        c.PARTITION_KEY: _stream_key(envelope.stream),
        c.SORT_KEY: envelope.seq,
        "id": envelope.id,
        "type": envelope.type,
        "ts": envelope.ts,
        "prev": envelope.prev,
        "heads": heads,
        "schema_version": envelope.schema_version,
        "producer": envelope.producer,
        "data": json.dumps(envelope.data, separators=(",", ":"), ensure_ascii=False),
        c.TTL_ATTRIBUTE: now_ms // 1000 + window_seconds,
    }
    if envelope.key is not None:
        item["key"] = envelope.key
    return item


def _envelope(item: Item) -> Envelope:
    return Envelope(
        id=item["id"],
        type=item["type"],
        stream=item[c.PARTITION_KEY].removeprefix("stream#"),
        seq=int(item[c.SORT_KEY]),
        prev=int(item["prev"]),
        ts=item["ts"],
        schema_version=int(item["schema_version"]),
        data=json.loads(item["data"]),
        producer=item["producer"],
        key=item.get("key"),
    )
