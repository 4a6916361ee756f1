"""The event store: one DynamoDB table holding, per stream, a gap-free sequence of events.

Layout (partition key `pk` string, sort key `sk` number, TTL attribute `expires_at`):

    pk="stream#<name>", sk=0      the stream head: seq of the last event, the last seq of each type, and
                                  the last event itself (`last`); never expires
    pk="stream#<name>", sk=<seq>  one event, seq >= 1
    pk="event#<id>",    sk=0      the idempotency claim of an event id: its stream and seq once stored

The head is the commit point. Appending an event moves the head from seq n to n+1 with one conditional
update (`seq = n`) that also stores the event in the head. Before moving it, the publisher copies the
head's event n into its own item (a conditional put that is a no-op if it is there already), so the
table always holds every event below the head and the head holds the last one. Readers read the head
first, then the table below it. A publisher that loses the race gets the new head back and tries again.

So the sequence has no hole and no duplicate whatever publishers crash where, the head never lags, and
TTL can never free a seq for reuse. Every write is a single-item conditional write; no transaction.
The id claim makes publishing idempotent; a claimant stops trying to commit FENCE_SECONDS after its
claim, and only a claim older than CLAIM_TIMEOUT_SECONDS is taken over, so the two never overlap
unless clocks disagree by more than the difference (95 s).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from streaming import constants as c
from streaming.dynamo import deserialize, key, serialize
from streaming.errors import ErrorCode, StreamingError
from streaming.events import Envelope, NewEvent, format_ts, parse_ts
from streaming.results import Appended, Page

Item = dict[str, Any]


CLAIM_TIMEOUT_SECONDS = 120.0
# A claimant never commits later than this after its claim: before its function's timeout, so it can
# still release a claim it could not commit.
FENCE_SECONDS = c.PUBLISH_TIMEOUT_SECONDS - 5.0


class Step(Enum):
    """The points of an append where a publisher that crashes or stalls leaves work for recovery."""

    CLAIMED = "claimed"  # the id is claimed (or taken over); the head has not moved yet
    COMMITTED = "committed"  # the head carries the event; the claim does not know its seq yet


def _no_hook(step: Step) -> None:
    pass


@dataclass(frozen=True, slots=True)
class _Head:
    seq: int
    heads: dict[str, int]
    last: Item | None  # the event at `seq` (its table copy may not be written yet)

    @classmethod
    def of(cls, item: Item | None) -> _Head:
        if not item:
            return cls(0, {}, None)
        return cls(int(item["seq"]), _ints(item.get("heads", {})), item.get("last"))


@dataclass
class _Scan:
    """What one stream contributed to a replay: the last scanned seq, and the visible events."""

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
        claim_timeout_seconds: float = CLAIM_TIMEOUT_SECONDS,
        fence_seconds: float = FENCE_SECONDS,
        pending_wait_seconds: float = 2.0,
        max_commit_attempts: int = 200,
        max_scan: int = 1000,
        at_step: Callable[[Step], None] = _no_hook,
    ) -> None:
        """`at_step` is called as an append reaches each Step: where tests inject a crash or a pause."""
        self._client = client
        self._table = table_name
        self._streams_by_type = dict(streams_by_type)
        self._window = replay_window_seconds
        self._clock = clock
        self._claim_timeout_ms = int(claim_timeout_seconds * 1000)
        self._fence_ms = int(fence_seconds * 1000)
        self._pending_wait = pending_wait_seconds
        self._max_attempts = max_commit_attempts
        self._max_scan = max_scan
        self._at_step = at_step

    # -- appending ---------------------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent], producer: str) -> list[Appended]:
        """Store each event once, in order. Re-appending a stored id returns its original seq.
        `producer` is who publishes, as the caller authenticated it."""
        return [self._append_one(event, producer) for event in events]

    def _append_one(self, event: NewEvent, producer: str) -> Appended:
        stream = self._streams_by_type[event.type]
        head = self._read_head(stream)
        claimed_at = self._now_ms()
        claim = {
            c.PARTITION_KEY: _marker_key(event.id),
            c.SORT_KEY: 0,
            "stream": stream,
            "type": event.type,
            "digest": event.digest(),
            "from_seq": head.seq + 1,
            "claimed_at": claimed_at,
            c.TTL_ATTRIBUTE: claimed_at // 1000 + self._window,
        }
        existing = self._put_if_absent(claim)
        if existing is None:
            return self._commit(event, producer, stream, head, claimed_at)
        # An empty answer: a backend that does not return the existing item on a failed condition.
        return self._resolve_claimed(event, producer, existing or self._claim_of(event.id))

    def _resolve_claimed(self, event: NewEvent, producer: str, claim: Item) -> Appended:
        """The id was claimed before: return the stored result, wait for an in-flight publish,
        or take over a claim whose publisher died before committing it."""
        if claim["digest"] != event.digest():
            raise StreamingError(
                ErrorCode.ID_CONFLICT, f"event id {event.id} was already used for a different event"
            )
        deadline = time.monotonic() + self._pending_wait
        while "seq" not in claim:
            if self._now_ms() - int(claim["claimed_at"]) > self._claim_timeout_ms:
                return self._take_over(event, producer, claim)
            if time.monotonic() > deadline:
                raise StreamingError(
                    ErrorCode.PUBLISH_IN_PROGRESS,
                    f"event {event.id} is being stored by another request; retry",
                )
            time.sleep(0.05)
            claim = self._claim_of(event.id)
        return Appended(event.id, event.type, claim["stream"], int(claim["seq"]), claim["ts"], duplicate=True)

    def _take_over(self, event: NewEvent, producer: str, claim: Item) -> Appended:
        stream = claim["stream"]
        stored = self._find_by_id(stream, int(claim["from_seq"]), event.id)
        if stored is not None:  # its publisher committed it, then died before recording the seq
            self._record_seq(event.id, stored.seq, stored.ts)
            return Appended(event.id, event.type, stream, stored.seq, stored.ts, duplicate=True)
        claimed_at = self._now_ms()
        try:
            self._client.update_item(
                TableName=self._table,
                Key=key(_marker_key(event.id), 0),
                UpdateExpression="SET claimed_at = :now, expires_at = :expires",
                ConditionExpression="claimed_at = :old AND attribute_not_exists(seq)",
                ExpressionAttributeValues=serialize(
                    {
                        ":now": claimed_at,
                        ":old": claim["claimed_at"],
                        ":expires": claimed_at // 1000 + self._window,
                    }
                ),
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return self._resolve_claimed(event, producer, self._claim_of(event.id))
        return self._commit(event, producer, stream, self._read_head(stream), claimed_at)

    def _commit(self, event: NewEvent, producer: str, stream: str, head: _Head, claimed_at: int) -> Appended:
        self._at_step(Step.CLAIMED)
        try:
            envelope, conflicts = self._advance(event, producer, stream, head, claimed_at + self._fence_ms)
        except StreamingError:
            # Every attempt was refused, so nothing was committed: free the id for an immediate retry.
            # (After any other failure the outcome is unknown; the claim then waits for a take-over.)
            with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
                self._client.delete_item(
                    TableName=self._table,
                    Key=key(_marker_key(event.id), 0),
                    ConditionExpression="claimed_at = :mine AND attribute_not_exists(seq)",
                    ExpressionAttributeValues=serialize({":mine": claimed_at}),
                )
            raise
        self._at_step(Step.COMMITTED)
        self._record_seq(event.id, envelope.seq, envelope.ts)
        return Appended(
            event.id,
            event.type,
            stream,
            envelope.seq,
            envelope.ts,
            duplicate=False,
            conflicts=conflicts,
            envelope=envelope,
        )

    def _advance(
        self, event: NewEvent, producer: str, stream: str, head: _Head, fence_ms: int
    ) -> tuple[Envelope, int]:
        """Move the stream head one seq forward, carrying the event: the commit point."""
        for conflicts in range(self._max_attempts):
            now_ms = self._now_ms()
            if now_ms > fence_ms:
                break  # past the fence the claim may be taken over: never commit now
            if head.last is not None:
                self._put_if_absent(head.last)  # the event below the new head must be in the table
            seq = head.seq + 1
            envelope = Envelope(
                id=event.id,
                type=event.type,
                stream=stream,
                seq=seq,
                prev=head.heads.get(event.type, 0),
                ts=format_ts(now_ms),
                schema_version=event.schema_version,
                data=event.data,
                producer=producer,
                key=event.key,
                type_heads={**head.heads, event.type: seq},
            )
            values = {
                ":seq": seq,
                ":heads": dict(envelope.type_heads),
                ":last": _event_item(envelope, now_ms, self._window),
            }
            if head.seq:
                values[":prev"] = head.seq
            started = time.monotonic()
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key=key(_stream_key(stream), 0),
                    UpdateExpression="SET seq = :seq, heads = :heads, #last = :last",
                    ConditionExpression="seq = :prev" if head.seq else "attribute_not_exists(seq)",
                    ExpressionAttributeNames={"#last": "last"},
                    ExpressionAttributeValues=serialize(values),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return envelope, conflicts
            except self._client.exceptions.ConditionalCheckFailedException as error:
                round_trip = time.monotonic() - started
                returned = error.response.get("Item")
                head = _Head.of(deserialize(returned)) if returned else self._read_head(stream)
            # Lost to a publisher in lock-step with this one: wait a random part of a few round
            # trips, so the losers of this seq do not all collide again on the next one.
            time.sleep(random.uniform(0, round_trip * min(2 * (conflicts + 1), 16)))  # noqa: S311
        raise StreamingError(
            ErrorCode.STREAM_CONTENDED, f"stream {stream} is too contended right now; retry with the same id"
        )

    def _record_seq(self, event_id: str, seq: int, ts: str) -> None:
        """Complete the claim; it now lives as long as the event."""
        expires_at = parse_ts(ts) // 1000 + self._window
        self._client.update_item(
            TableName=self._table,
            Key=key(_marker_key(event_id), 0),
            UpdateExpression="SET seq = :seq, ts = :ts, expires_at = :expires",
            ExpressionAttributeValues=serialize({":seq": seq, ":ts": ts, ":expires": expires_at}),
        )

    def _claim_of(self, event_id: str) -> Item:
        claim = self._get(_marker_key(event_id), 0)
        if claim is None:  # expired between two reads: the caller may simply publish again
            raise StreamingError(ErrorCode.PUBLISH_IN_PROGRESS, f"claim of {event_id} changed; retry")
        return claim

    def _read_head(self, stream: str) -> _Head:
        return _Head.of(self._get(_stream_key(stream), 0))

    def _find_by_id(self, stream: str, from_seq: int, event_id: str) -> Envelope | None:
        for item in self._log(stream, after=from_seq - 1):
            if item["id"] == event_id:
                return _envelope(item)
        return None

    # -- reading -----------------------------------------------------------------------------------

    def after(self, cursor: Mapping[str, int], types: frozenset[str], limit: int) -> Page:
        """Events of `types` after `cursor`, at most `limit`, expired events excluded. Each stream's
        events come in seq order; streams are interleaved by ts."""
        now_s = self._clock()
        scans = {
            stream: self._scan_forward(stream, cursor.get(stream, 0), types, limit, now_s)
            for stream in self._streams_of(types)
        }
        merged = heapq.merge(*(scan.events for scan in scans.values()), key=_by_time)
        served = list(itertools.islice(merged, limit))
        new_cursor = dict(cursor)
        held_back = False
        for stream, scan in scans.items():
            count = sum(1 for event in served if event.stream == stream)
            if count < len(scan.events):  # what was served is a prefix of this stream's events
                new_cursor[stream] = scan.events[count].seq - 1
                held_back = True
            else:
                new_cursor[stream] = scan.last_seq
        return Page(
            events=served,
            cursor=new_cursor,
            more=held_back or any(scan.more for scan in scans.values()),
            truncated=any(scan.truncated for scan in scans.values()),
        )

    def latest(self, types: frozenset[str], count: int) -> Page:
        """The last `count` events of `types` (oldest first) and a cursor at the head of each stream.
        `more` says a stream was scanned to the bound without finding `count` visible events."""
        now_s = self._clock()
        newest: list[list[Envelope]] = []
        tail: dict[str, int] = {}
        bounded = False
        for stream in self._streams_of(types):
            head = self._read_head(stream)
            tail[stream] = head.seq
            found: list[Envelope] = []
            for scanned, item in enumerate(self._log(stream, after=0, head=head, newest_first=True)):
                if len(found) >= count:
                    break
                if scanned >= self._max_scan:
                    bounded = True
                    break
                if item["type"] in types and int(item[c.TTL_ATTRIBUTE]) > now_s:
                    found.append(_envelope(item))
            newest.append(found)
        # Newest first, each stream in seq order, so what is kept of a stream is its newest part.
        kept = list(itertools.islice(heapq.merge(*newest, key=_by_time, reverse=True), count))
        return Page(events=kept[::-1], cursor=tail, more=bounded)

    def get(self, stream: str, seq: int) -> Envelope | None:
        """One event by position (the fan-out worker reads what it delivers); None if it has expired."""
        item = self._get(_stream_key(stream), seq)
        if item is None:
            head = self._read_head(stream)
            item = head.last if head.seq == seq else None
        if item is None or int(item[c.TTL_ATTRIBUTE]) <= self._clock():
            return None
        return _envelope(item)

    def heads(self, types: Iterable[str] | None = None) -> dict[str, int]:
        """The last seq of every stream (0 for an empty stream), or of the streams of `types`."""
        streams = (
            self._streams_of(frozenset(types)) if types is not None else set(self._streams_by_type.values())
        )
        return {stream: self._read_head(stream).seq for stream in sorted(streams)}

    def _scan_forward(
        self, stream: str, start: int, types: frozenset[str], limit: int, now_s: float
    ) -> _Scan:
        scan = _Scan(last_seq=start, events=[])
        for scanned, item in enumerate(self._log(stream, after=start)):
            if len(scan.events) >= limit or scanned >= self._max_scan:
                scan.more = True
                break
            seq = int(item[c.SORT_KEY])
            expired = int(item[c.TTL_ATTRIBUTE]) <= now_s
            # A missing or expired seq after a given cursor can only be an event the replay window
            # dropped: the sequence itself has no holes.
            if start and (seq != scan.last_seq + 1 or expired):
                scan.truncated = True
            scan.last_seq = seq
            if not expired and item["type"] in types:
                scan.events.append(_envelope(item))
        return scan

    def _log(
        self, stream: str, *, after: int, head: _Head | None = None, newest_first: bool = False
    ) -> Iterator[Item]:
        """The stream's events with seq > `after`: the table below the head, then the head's event.
        The head is read first, so nothing committed below it can be missed."""
        head = head or self._read_head(stream)
        if head.last is None or head.seq <= after:
            return
        below: Iterator[Item] = iter(())
        if head.seq - 1 > after:
            below = self._query(stream, after + 1, head.seq - 1, forward=not newest_first)
        if newest_first:
            yield head.last
            yield from below
        else:
            yield from below
            yield head.last

    # -- DynamoDB helpers --------------------------------------------------------------------------

    def _streams_of(self, types: frozenset[str]) -> list[str]:
        return sorted({self._streams_by_type[t] for t in types if t in self._streams_by_type})

    def _query(self, stream: str, low: int, high: int, *, forward: bool) -> Iterator[Item]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
            "ExpressionAttributeValues": serialize({":pk": _stream_key(stream), ":low": low, ":high": high}),
            "ConsistentRead": True,
            "ScanIndexForward": forward,
            "Limit": 100,
        }
        while True:
            response = self._client.query(**request)
            for raw in response.get("Items", []):
                yield deserialize(raw)
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _get(self, pk: str, sk: int) -> Item | None:
        response = self._client.get_item(TableName=self._table, Key=key(pk, sk), ConsistentRead=True)
        return deserialize(response["Item"]) if "Item" in response else None

    def _put_if_absent(self, item: Item) -> Item | None:
        """Put the item unless its key exists; return the existing item (or {}) when it does."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item=serialize(item),
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._client.exceptions.ConditionalCheckFailedException as error:
            return deserialize(error.response.get("Item", {}))
        return None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _by_time(event: Envelope) -> tuple[str, str, int]:
    return (event.ts, event.stream, event.seq)


def _stream_key(stream: str) -> str:
    return f"stream#{stream}"


def _marker_key(event_id: str) -> str:
    return f"event#{event_id}"


def _ints(mapping: Mapping[str, Any]) -> dict[str, int]:
    return {name: int(value) for name, value in mapping.items()}


def _event_item(envelope: Envelope, now_ms: int, window_seconds: int) -> Item:
    item: Item = {
        c.PARTITION_KEY: _stream_key(envelope.stream),
        c.SORT_KEY: envelope.seq,
        "id": envelope.id,
        "type": envelope.type,
        "ts": envelope.ts,
        "prev": envelope.prev,
        "heads": dict(envelope.type_heads),
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
        type_heads=_ints(item["heads"]),
    )
