"""Live fan-out on moto: role-checked audiences, ordered frames, 410 removal, bounded retries, chunks."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from clients.ordering import Ordering
from streaming import codec
from streaming.coalesce import Coalescing
from streaming.events import Envelope
from streaming.fanout import (
    FanOut,
    Recipient,
    Report,
    chunk_payload,
    recipients_from_payload,
    stored_at,
)
from streaming.management import RETRY_DELAYS_SECONDS
from streaming.observability import metrics, spread
from tests.conftest import CONNECTIONS_TABLE, example, signal

pytestmark = pytest.mark.connections
ALL_TYPES = [
    "signal.created",
    "proposal.created",
    "proposal.updated",
    "decision.made",
    "risk.alert",
    "eval.completed",
    "system.status",
]


class FakePoster:
    """Records every post; answers each connection from its script of statuses, then 200."""

    def __init__(self, script: dict[str, list[int]] | None = None, fail: Exception | None = None) -> None:
        self.posts: list[tuple[str, bytes]] = []
        self._script = {cid: list(statuses) for cid, statuses in (script or {}).items()}
        self._fail = fail
        self._lock = threading.Lock()

    def post(self, connection_id: str, data: bytes) -> int:
        with self._lock:
            self.posts.append((connection_id, data))
            if self._fail is not None:
                raise self._fail
            statuses = self._script.get(connection_id)
            return statuses.pop(0) if statuses else 200

    def frames(self, connection_id: str) -> list[dict[str, Any]]:
        return [json.loads(data) for cid, data in self.posts if cid == connection_id]

    def events(self, connection_id: str) -> list[dict[str, Any]]:
        return [codec.decode_event(e) for frame in self.frames(connection_id) for e in frame["events"]]


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.delays.append(seconds)


@pytest.fixture
def executor():
    with ThreadPoolExecutor(4) as pool:
        yield pool


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def make_fanout(registry, executor, sleeps):
    def make(
        poster,
        *,
        chunk_connections=250,
        dispatch=None,
        compress_above=10**9,
        clock=time.time,
        coalescing=None,
        posts_in_flight=1,  # the outbox tests hold one post in flight; the shipped value has its own
    ):
        return FanOut(
            registry,
            poster,
            compress_above=compress_above,
            chunk_connections=chunk_connections,
            dispatch=dispatch,
            executor=executor,
            sleep=sleeps,
            clock=clock,
            coalescing=coalescing,
            posts_in_flight=posts_in_flight,
        )

    return make


def connect(registry, clock, connection_id, role, types=ALL_TYPES):
    connection = registry.connect(connection_id, connection_id.lower(), role, int(clock.now) + 3600)
    registry.subscribe(connection, types)
    return connection


def publish_one_of_each(publisher, settings) -> list[Envelope]:
    results = publisher.publish([example(t, settings) for t in ALL_TYPES], "tests")
    return [r.envelope for r in results if r.envelope is not None]


def big_event(seq: int) -> Envelope:
    """A proposal.updated of about 10 KB (uncompressed: see make_fanout), so three fill a frame."""
    return Envelope(
        id=f"0192f1c4-8d2e-7a51-9c3b-{seq:012d}",
        type="proposal.updated",
        stream="market",
        seq=seq,
        prev=seq - 1,
        ts=f"2026-11-27T08:00:{seq:02d}.000Z",
        schema_version=1,
        data={"changes": {"rationale": "r" * 10_000}},
        producer="tests",
        type_heads={"proposal.updated": seq},
    )


def subscriptions_of(dynamodb, connection_id) -> list[str]:
    items = dynamodb.scan(TableName=CONNECTIONS_TABLE)["Items"]
    return sorted(
        item["pk"]["S"]
        for item in items
        if item["sk"]["S"] == connection_id or item["pk"]["S"] == f"connection#{connection_id}"
    )


def test_each_connection_gets_what_it_subscribed_to_and_its_role_allows(
    registry, clock, settings, publisher, make_fanout
):
    for role in ("viewer", "analyst", "approver", "admin"):
        connect(registry, clock, role.upper(), role)
    connect(registry, clock, "NARROW", "admin", ["risk.alert", "eval.completed"])
    connect(registry, clock, "DENIED", "viewer", ["risk.alert"])  # granted nothing
    events = publish_one_of_each(publisher, settings)
    poster = FakePoster()
    report = make_fanout(poster).deliver(events)

    for role in ("viewer", "analyst", "approver", "admin"):
        expected = [e.id for e in events if e.type in settings.roles.allowed(role)]
        assert [e["id"] for e in poster.events(role.upper())] == expected, role
    assert [e["type"] for e in poster.events("NARROW")] == ["risk.alert", "eval.completed"]
    assert poster.frames("DENIED") == []
    assert (report.connections, report.delivered, report.failed, report.gone) == (5, 5, 0, 0)


def test_a_forged_subscription_item_does_not_get_a_viewer_what_its_role_forbids(
    dynamodb, registry, clock, settings, publisher, make_fanout
):
    connect(registry, clock, "V", "viewer", ["signal.created"])
    dynamodb.put_item(
        TableName=CONNECTIONS_TABLE,
        Item={
            "pk": {"S": "type#risk.alert"},
            "sk": {"S": "V"},
            "role": {"S": "viewer"},
            "types": {"SS": ["risk.alert", "signal.created"]},
            "expires_at": {"N": str(int(clock.now) + 3600)},
        },
    )
    events = publish_one_of_each(publisher, settings)
    poster = FakePoster()
    make_fanout(poster).deliver(events)
    assert [e["type"] for e in poster.events("V")] == ["signal.created"]


@pytest.mark.batching
def test_frames_go_to_each_connection_in_order(registry, clock, make_fanout):
    for connection_id in ("A", "B", "C"):
        connect(registry, clock, connection_id, "viewer", ["proposal.updated"])
    events = [big_event(seq) for seq in range(1, 11)]
    poster = FakePoster()
    report = make_fanout(poster).deliver(events)
    for connection_id in ("A", "B", "C"):
        frames = poster.frames(connection_id)
        assert len(frames) > 1 and all(set(frame) == {"type", "events"} for frame in frames)
        assert [(e["seq"], e["prev"]) for e in poster.events(connection_id)] == [
            (s, s - 1) for s in range(1, 11)
        ]
    assert report.frames == report.delivered == 3 * len(poster.frames("A"))


def test_each_connections_prev_is_among_all_the_types_it_subscribes_to(
    registry, clock, settings, publisher, make_fanout
):
    """The defect this fixes: a subscriber to two types of a stream could not tell from a per-type
    `prev` that an event of its other type was still on its way."""
    connect(registry, clock, "BOTH", "viewer", ["signal.created", "proposal.updated"])
    connect(registry, clock, "ONE", "viewer", ["signal.created"])
    connect(registry, clock, "ALL", "admin")
    first = publisher.publish([signal()], "tests")[0].envelope
    between = publisher.publish([example("proposal.updated", settings)], "tests")[0].envelope
    last = publisher.publish([signal()], "tests")[0].envelope
    assert first and between and last
    poster = FakePoster()
    make_fanout(poster).deliver([last])  # `between` is still on its way
    assert [e["prev"] for e in poster.events("BOTH")] == [between.seq]
    assert [e["prev"] for e in poster.events("ONE")] == [first.seq]
    assert [e["prev"] for e in poster.events("ALL")] == [between.seq]


def test_a_410_removes_exactly_that_connection(dynamodb, registry, clock, make_fanout):
    for connection_id in ("GONE", "STAYS"):
        connect(registry, clock, connection_id, "admin", ["proposal.updated", "risk.alert", "signal.created"])
    events = [big_event(seq) for seq in range(1, 11)]  # several frames each
    poster = FakePoster({"GONE": [410]})
    report = make_fanout(poster).deliver(events)

    assert len(poster.frames("GONE")) == 1  # nothing more is posted after a 410
    assert registry.get("GONE") is None
    assert subscriptions_of(dynamodb, "GONE") == []
    assert registry.get("STAYS").types == {"proposal.updated", "risk.alert", "signal.created"}
    assert len(subscriptions_of(dynamodb, "STAYS")) == 4  # the connection and its three types
    for event_type in ("proposal.updated", "risk.alert", "signal.created"):
        assert [s.connection_id for s in registry.subscribers(event_type)] == ["STAYS"]
    assert [e["seq"] for e in poster.events("STAYS")] == list(range(1, 11))
    assert report.gone == 1 and report.failed == 0


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_retried_with_bounded_delays_then_given_up(
    registry, clock, make_fanout, sleeps, status
):
    connect(registry, clock, "SLOW", "viewer", ["proposal.updated"])
    poster = FakePoster({"SLOW": [status] * 10})
    report = make_fanout(poster).deliver([big_event(1)])
    assert len(poster.frames("SLOW")) == 1 + len(RETRY_DELAYS_SECONDS)
    assert sleeps.delays == list(RETRY_DELAYS_SECONDS)
    assert (report.frames, report.delivered, report.failed, report.gone) == (1, 0, 1, 0)
    assert registry.get("SLOW") is not None


def test_a_retry_that_succeeds_counts_as_delivered(registry, clock, make_fanout, sleeps):
    connect(registry, clock, "FLAKY", "viewer", ["proposal.updated"])
    poster = FakePoster({"FLAKY": [429, 502, 200]})
    report = make_fanout(poster).deliver([big_event(1)])
    assert len(poster.frames("FLAKY")) == 3
    assert sleeps.delays == list(RETRY_DELAYS_SECONDS[:2])
    assert (report.delivered, report.failed) == (1, 0)


@pytest.mark.parametrize("status", [400, 403, 0])
def test_client_errors_and_requests_of_unknown_fate_are_not_retried(
    registry, clock, make_fanout, sleeps, status
):
    connect(registry, clock, "X", "viewer", ["proposal.updated"])
    connect(registry, clock, "Y", "viewer", ["proposal.updated"])
    poster = FakePoster({"X": [status]})
    report = make_fanout(poster).deliver([big_event(1)])
    assert len(poster.frames("X")) == 1
    assert sleeps.delays == []
    assert (report.delivered, report.failed, report.gone) == (1, 1, 0)
    assert registry.get("X") is not None


@pytest.mark.batching
def test_audiences_above_a_chunk_dispatch_every_chunk_but_the_first(registry, clock, settings, make_fanout):
    ids = [f"C{i:02d}" for i in range(8)]
    for i, connection_id in enumerate(ids):
        types = ["signal.created", "risk.alert"] if i % 2 else ["signal.created"]
        connect(registry, clock, connection_id, "approver", types)
    events = [
        big_event(2),
        Envelope(
            "e-3", "risk.alert", "risk", 5, 0, "2026-11-27T08:00:03.000Z", 1, {"x": 1}, "p", type_heads={}
        ),
        Envelope(
            "e-4",
            "signal.created",
            "market",
            3,
            0,
            "2026-11-27T08:00:04.000Z",
            1,
            {"y": 2},
            "p",
            type_heads={},
        ),
    ]
    dispatched: list[dict[str, Any]] = []
    poster = FakePoster()
    fanout = make_fanout(poster, chunk_connections=3, dispatch=dispatched.append)
    audience = list(fanout.audience(events).values())
    report = fanout.deliver(events)

    assert report.chunks_dispatched == len(dispatched) == 2
    assert report.connections == 3
    inline = {cid for cid, _ in poster.posts}
    assert inline == {r.connection_id for r in audience[:3]}
    by_position = {(e.stream, e.seq): e for e in events}
    rebuilt = [
        recipient
        for payload in dispatched
        for recipient in recipients_from_payload(
            json.loads(json.dumps(payload)), lambda stream, seq: by_position[(stream, seq)]
        )
    ]
    assert rebuilt == audience[3:]
    assert inline.isdisjoint(r.connection_id for r in rebuilt)
    assert {r.connection_id for r in audience} == set(ids)


def test_a_frame_given_up_on_ends_that_connections_delivery_so_no_later_cursor_skips_it(
    registry, clock, make_fanout
):
    connect(registry, clock, "LOSSY", "viewer", ["proposal.updated"])
    connect(registry, clock, "FINE", "viewer", ["proposal.updated"])
    poster = FakePoster({"LOSSY": [500] * (1 + len(RETRY_DELAYS_SECONDS))})
    report = make_fanout(poster).deliver([big_event(seq) for seq in range(1, 11)])
    assert {frame["events"][0]["seq"] for frame in poster.frames("LOSSY")} == {1}  # the first, retried
    assert [e["seq"] for e in poster.events("FINE")] == list(range(1, 11))
    assert report.failed == 1


def test_a_chunk_that_cannot_be_dispatched_does_not_stop_the_others_or_the_inline_one(
    registry, clock, make_fanout
):
    for i in range(9):
        connect(registry, clock, f"C{i}", "viewer", ["proposal.updated"])
    calls: list[dict[str, Any]] = []

    def flaky_dispatch(payload: dict[str, Any]) -> None:
        calls.append(payload)
        if len(calls) == 1:
            raise ConnectionError("Lambda Invoke throttled")

    poster = FakePoster()
    report = make_fanout(poster, chunk_connections=3, dispatch=flaky_dispatch).deliver([big_event(1)])
    assert len(calls) == 2 and report.chunks_dispatched == 1
    assert report.failed == 3  # the chunk that did not go out
    assert report.delivered == 3 and len({cid for cid, _ in poster.posts}) == 3


@pytest.mark.batching
def test_without_a_dispatcher_a_large_audience_is_delivered_inline(registry, clock, make_fanout):
    for i in range(5):
        connect(registry, clock, f"C{i}", "viewer", ["proposal.updated"])
    poster = FakePoster()
    report = make_fanout(poster, chunk_connections=2).deliver([big_event(1)])
    assert (report.connections, report.chunks_dispatched) == (5, 0)
    assert len({cid for cid, _ in poster.posts}) == 5


@pytest.mark.batching
def test_a_chunk_payload_round_trips_and_skips_events_that_expired():
    events = [big_event(1), big_event(2), big_event(3)]
    recipients = [
        Recipient("A", frozenset({"proposal.updated"}), [events[0], events[2]], ["proposal.updated"]),
        Recipient(
            "B",
            frozenset({"proposal.updated", "signal.created"}),
            [events[1], events[2]],
            ["proposal.updated"],
        ),
    ]
    payload = json.loads(json.dumps(chunk_payload(recipients)))
    assert payload["events"] == [{"stream": "market", "seq": seq} for seq in (1, 2, 3)]
    by_seq = {e.seq: e for e in events}
    assert recipients_from_payload(payload, lambda _stream, seq: by_seq[seq]) == recipients
    loaded: list[tuple[str, int]] = []

    def lose_the_second(stream: str, seq: int) -> Envelope | None:
        loaded.append((stream, seq))
        return None if seq == 2 else by_seq[seq]

    rebuilt = recipients_from_payload(payload, lose_the_second)
    assert [[e.seq for e in r.events] for r in rebuilt] == [[1, 3], [3]]
    assert [r.types for r in rebuilt] == [{"proposal.updated"}, {"proposal.updated", "signal.created"}]
    assert loaded == [("market", 1), ("market", 2), ("market", 3)]  # each event read once


@pytest.mark.batching
def test_a_chunk_of_another_version_is_skipped_not_guessed_at():
    old = {
        "events": [{"stream": "market", "seq": 1}],
        "recipients": [{"connection_id": "A", "base": {}, "events": [0], "types": ["signal.created"]}],
    }
    assert recipients_from_payload(old, lambda _stream, _seq: big_event(1)) == []


def test_deliver_stored_skips_duplicates(registry, clock, publisher, make_fanout):
    connect(registry, clock, "A", "viewer", ["signal.created"])
    first = signal()
    stored = publisher.publish([first], "tests")
    duplicate = publisher.publish([first], "tests")
    assert duplicate[0].duplicate and duplicate[0].envelope is None
    poster = FakePoster()
    fanout = make_fanout(poster)
    assert fanout.deliver_stored(duplicate).connections == 0
    assert poster.posts == []
    report = fanout.deliver_stored(duplicate + stored)
    assert [e["id"] for e in poster.events("A")] == [first["id"]]
    assert report.delivered == 1


def test_deliver_stored_never_raises_when_posting_does(registry, clock, publisher, make_fanout):
    connect(registry, clock, "A", "viewer", ["signal.created"])
    poster = FakePoster(fail=ConnectionError("socket exploded"))
    report = make_fanout(poster).deliver_stored(publisher.publish([signal()], "tests"))
    assert report.failed >= 1 and report.delivered == 0
    assert len(poster.posts) == 1


def test_no_subscribers_no_posts(registry, clock, publisher, settings, make_fanout):
    connect(registry, clock, "A", "viewer", ["proposal.created"])
    poster = FakePoster()
    report = make_fanout(poster).deliver_stored(publisher.publish([example("risk.alert", settings)], "t"))
    assert poster.posts == [] and report.connections == 0


def test_expired_subscriptions_get_nothing(registry, clock, make_fanout):
    registry.subscribe(registry.connect("OLD", "o", "viewer", int(clock.now) + 10), ["proposal.updated"])
    connect(registry, clock, "NEW", "viewer", ["proposal.updated"])
    clock.advance(11)
    poster = FakePoster()
    make_fanout(poster).deliver([big_event(1)])
    assert [cid for cid, _ in poster.posts] == ["NEW"]


@pytest.mark.batching
def test_an_event_is_encoded_once_however_many_connections_get_it(registry, clock, make_fanout, monkeypatch):
    for connection_id in ("A", "B", "C"):
        connect(registry, clock, connection_id, "viewer", ["proposal.updated"])
    calls: list[str] = []
    encode = codec.encode_event

    def counted(event: Envelope, compress_above: int, types: Any) -> dict[str, Any]:
        calls.append(event.id)
        return encode(event, compress_above, types)

    monkeypatch.setattr(codec, "encode_event", counted)
    poster = FakePoster()
    make_fanout(poster, compress_above=256).deliver([big_event(1), big_event(2)])
    assert sorted(calls) == sorted({e.id for e in (big_event(1), big_event(2))})
    assert all(len(poster.events(connection_id)) == 2 for connection_id in ("A", "B", "C"))


def test_each_connection_served_reports_its_latency_from_the_store_time_as_a_metric(
    registry, clock, make_fanout, capsys
):
    for connection_id in ("A", "B"):
        connect(registry, clock, connection_id, "viewer", ["proposal.updated"])
    events = [big_event(seq) for seq in range(1, 5)]  # two frames each
    report = make_fanout(FakePoster(), clock=lambda: stored_at(events[0]) + 0.25).deliver(events)
    assert report.latencies_ms == [pytest.approx(250), pytest.approx(250)]  # once per connection
    report.record()
    metrics.flush_metrics()
    [document] = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "DeliveryLatency" in line
    ]
    assert document["DeliveryLatency"] == [pytest.approx(250), pytest.approx(250)]
    assert document["FramesDelivered"] == [4.0]


def test_many_latencies_are_recorded_as_an_even_spread_that_keeps_their_percentiles():
    spread_out = spread([float(v) for v in range(999, -1, -1)], 100)
    assert len(spread_out) == 100 and spread_out == sorted(spread_out)
    assert (spread_out[0], spread_out[-1], spread_out[98]) == (0.0, 999.0, 989.0)
    assert spread([3.0, 1.0], 100) == [1.0, 3.0]


# -- Graceful degradation: coalescing by key (streaming.coalesce) -----------------------------------

COALESCE_UPDATES = frozenset({"proposal.updated"})


def keyed_update(settings, key: str) -> dict[str, Any]:
    return {**example("proposal.updated", settings), "key": key}


def received_in_order(events: list[dict[str, Any]]) -> Ordering:
    """The client's resume rule over what arrived: every event must be next when it comes."""
    client = Ordering()
    for event in events:
        assert client.offer(event) == [event], event
    return client


@pytest.mark.degradation
def test_a_burst_to_one_connection_is_coalesced_by_key_and_a_small_one_is_not(
    registry, clock, settings, publisher, make_fanout
):
    connect(registry, clock, "BURST", "approver", ["proposal.updated", "risk.alert", "signal.created"])
    connect(registry, clock, "CALM", "approver", ["risk.alert", "signal.created"])
    batch = [keyed_update(settings, f"p-{n % 3}") for n in range(9)]
    batch[4:4] = [example("risk.alert", settings), signal()]
    events = [r.envelope for r in publisher.publish(batch, "tests") if r.envelope is not None]
    poster = FakePoster()
    report = make_fanout(poster, coalescing=Coalescing(COALESCE_UPDATES, above_events=5)).deliver(events)

    burst = poster.events("BURST")
    received_in_order(burst)
    updates = [e for e in burst if e["type"] == "proposal.updated"]
    assert [e["key"] for e in updates] == ["p-0", "p-1", "p-2"]  # the latest of each key
    assert [e["seq"] for e in updates] == [e.seq for e in events if e.type == "proposal.updated"][-3:]
    assert sum(e["coalesced"] for e in updates) == 6
    assert [e["type"] for e in burst if e["type"] != "proposal.updated"] == ["risk.alert", "signal.created"]
    assert report.coalesced == {"proposal.updated": 6}
    assert [e["type"] for e in poster.events("CALM")] == ["risk.alert", "signal.created"]


@pytest.mark.degradation
def test_a_throttled_connection_gets_the_rest_of_its_events_coalesced(registry, clock, make_fanout):
    connect(registry, clock, "SLOW", "viewer", ["proposal.updated"])
    connect(registry, clock, "FAST", "viewer", ["proposal.updated"])
    events = [replace_key(big_event(seq), f"p-{seq % 2}") for seq in range(1, 13)]  # 3 to a frame
    poster = FakePoster({"SLOW": [429, 200]})
    report = make_fanout(poster, coalescing=Coalescing(COALESCE_UPDATES, above_events=1000)).deliver(events)

    refused, *accepted = poster.frames("SLOW")  # the first post was answered 429, then retried
    assert [e["seq"] for e in refused["events"]] == [1, 2, 3]
    slow = [codec.decode_event(e) for frame in accepted for e in frame["events"]]
    received_in_order(slow)
    assert [e["seq"] for e in slow] == [1, 2, 3, 11, 12]  # the first frame, then the latest of each key
    assert [e.get("coalesced", 0) for e in slow] == [0, 0, 0, 3, 4]  # 5, 7, 9 and 4, 6, 8, 10
    assert report.coalesced == {"proposal.updated": 7}
    assert [e["seq"] for e in poster.events("FAST")] == list(range(1, 13))


def replace_key(event: Envelope, key: str) -> Envelope:
    return dataclasses.replace(event, key=key)


@pytest.mark.degradation
def test_the_report_counts_coalesced_events_by_transport_and_type(capsys):
    Report(coalesced=Counter({"proposal.updated": 7, "system.status": 2})).record()
    metrics.clear_metrics()  # the handler's own flush is not what this looks at
    found = {}
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line)
        if "EventsCoalesced" in document:
            found[(document["transport"], document["type"])] = document["EventsCoalesced"]
    assert found == {("websocket", "proposal.updated"): [7.0], ("websocket", "system.status"): [2.0]}


# -- Adaptive batching across publishes (streaming.outbox) -----------------------------------------


class GatedPoster(FakePoster):
    """A FakePoster whose first `holds` posts to `connection_id` stay in flight until `gate` is set."""

    def __init__(
        self, connection_id: str, script: dict[str, list[int]] | None = None, holds: int = 1, **options: Any
    ) -> None:
        super().__init__(script, **options)
        self._held_id = connection_id
        self._holding = threading.Semaphore(holds)
        self._waiting = 0
        self._holds = holds
        self.in_flight = threading.Event()  # all `holds` posts are waiting
        self.gate = threading.Event()

    def post(self, connection_id: str, data: bytes) -> int:
        if connection_id == self._held_id and self._holding.acquire(blocking=False):
            with self._lock:
                self._waiting += 1
                if self._waiting == self._holds:
                    self.in_flight.set()
            assert self.gate.wait(timeout=60), "the test never opened the gate"
        return super().post(connection_id, data)


def small_events(count: int) -> list[Envelope]:
    return [dataclasses.replace(big_event(seq), data={"changes": {"n": seq}}) for seq in range(1, count + 1)]


TYPES = frozenset({"proposal.updated"})


def sends_in_flight(fanout: FanOut, poster: GatedPoster, *events: Envelope) -> list[Any]:
    """Start delivering each of `events` to connection C on a thread of its own; return once their
    posts are in flight, with the futures of their reports."""
    pool = ThreadPoolExecutor(len(events))
    sends = [pool.submit(fanout.send, [Recipient("C", TYPES, [event])]) for event in events]
    pool.shutdown(wait=False)
    assert poster.in_flight.wait(timeout=60)
    return sends


@pytest.mark.batching
def test_events_for_a_connection_with_a_post_in_flight_go_together_in_its_next_frame(registry, make_fanout):
    one, two, three, four = small_events(4)
    poster = GatedPoster("C")
    fanout = make_fanout(poster)
    (first,) = sends_in_flight(fanout, poster, one)
    folded = [fanout.send([Recipient("C", TYPES, [event])]) for event in (four, two, three)]
    other = fanout.send([Recipient("D", TYPES, [four])])  # another connection is not held up
    assert [report.folded for report in folded] == [1, 1, 1] and not any(r.frames for r in folded)
    assert (other.frames, other.folded) == (1, 0)
    assert poster.frames("C") == []  # nothing went out while the first post was in flight
    poster.gate.set()
    report = first.result(timeout=60)
    assert [[e["seq"] for e in frame["events"]] for frame in poster.frames("C")] == [[1], [2, 3, 4]]
    assert (report.connections, report.frames, report.delivered) == (1, 2, 2)
    received_in_order(poster.events("C"))
    assert len(report.latencies_ms) == 2  # the first frame's, and the one that carried the others


@pytest.mark.batching
def test_an_idle_connection_gets_each_event_at_once_in_a_frame_of_its_own(registry, make_fanout):
    poster = FakePoster()
    fanout = make_fanout(poster)
    reports = [fanout.send([Recipient("C", TYPES, [event])]) for event in small_events(3)]
    assert [(r.frames, r.folded) for r in reports] == [(1, 0)] * 3
    assert [[e["seq"] for e in frame["events"]] for frame in poster.frames("C")] == [[1], [2], [3]]


@pytest.mark.batching
def test_a_sender_drains_its_connection_once_then_the_next_delivery_claims_it(registry, make_fanout):
    one, two, three = small_events(3)
    poster = GatedPoster("C")
    fanout = make_fanout(poster)
    (first,) = sends_in_flight(fanout, poster, one)
    fanout.send([Recipient("C", TYPES, [two])])
    poster.gate.set()
    first.result(timeout=60)
    assert fanout.send([Recipient("C", TYPES, [three])]).frames == 1  # released: posted at once
    assert [[e["seq"] for e in frame["events"]] for frame in poster.frames("C")] == [[1], [2], [3]]


@pytest.mark.batching
@pytest.mark.parametrize("status", [410, 403])
def test_what_waited_for_a_connection_that_is_gone_or_failed_is_left_to_replay(
    registry, clock, make_fanout, status
):
    connect(registry, clock, "C", "viewer", ["proposal.updated"])
    one, two, three = small_events(3)
    poster = GatedPoster("C", {"C": [status]})
    fanout = make_fanout(poster)
    (first,) = sends_in_flight(fanout, poster, one)
    fanout.send([Recipient("C", TYPES, [two])])
    poster.gate.set()
    report = first.result(timeout=60)
    assert (report.frames, report.delivered, report.gone, report.failed) == (
        (1, 0, 1, 0) if status == 410 else (1, 0, 0, 1)
    )
    assert len(poster.frames("C")) == 1  # seq 2 was not sent after the connection failed
    assert fanout.send([Recipient("C", TYPES, [three])]).frames == 1  # and the connection is free


@pytest.mark.batching
def test_a_sender_that_fails_with_an_exception_still_releases_its_connection(registry, make_fanout):
    one, two, three = small_events(3)
    poster = GatedPoster("C", fail=RuntimeError("the management API client broke"))
    fanout = make_fanout(poster)
    (first,) = sends_in_flight(fanout, poster, one)
    fanout.send([Recipient("C", TYPES, [two])])
    poster.gate.set()
    with pytest.raises(RuntimeError):
        first.result(timeout=60)
    poster._fail = None
    assert fanout.send([Recipient("C", TYPES, [three])]).frames == 1  # not folded into a dead outbox


@pytest.mark.batching
@pytest.mark.degradation
def test_what_waited_in_an_outbox_is_coalesced_when_there_is_too_much_of_it(registry, make_fanout):
    events = [replace_key(event, f"p-{event.seq % 2}") for event in small_events(9)]
    poster = GatedPoster("C")
    fanout = make_fanout(poster, coalescing=Coalescing(COALESCE_UPDATES, above_events=5))
    (first,) = sends_in_flight(fanout, poster, events[0])
    for event in events[1:]:
        fanout.send([Recipient("C", TYPES, [event])])
    poster.gate.set()
    report = first.result(timeout=60)
    _, drained = poster.frames("C")
    assert [(e["seq"], e.get("coalesced", 0)) for e in drained["events"]] == [(8, 3), (9, 3)]
    assert report.coalesced == {"proposal.updated": 6}
    received_in_order(poster.events("C"))


@pytest.mark.batching
def test_events_wait_only_once_the_posts_in_flight_reach_the_limit(registry, make_fanout):
    events = small_events(5)
    poster = GatedPoster("C", holds=2)
    fanout = make_fanout(poster, posts_in_flight=2)
    sends = sends_in_flight(fanout, poster, *events[:2])  # two claimed posts in flight
    assert [fanout.send([Recipient("C", TYPES, [event])]).folded for event in events[2:]] == [1, 1, 1]
    poster.gate.set()
    reports = [send.result(timeout=60) for send in sends]
    assert sorted(report.frames for report in reports) == [1, 2]  # the first answered took what waited
    frames = sorted([e["seq"] for e in frame["events"]] for frame in poster.frames("C"))
    assert frames == [[1], [2], [3, 4, 5]]
    assert fanout.send([Recipient("C", TYPES, small_events(6)[5:])]).frames == 1  # all claims released


def test_without_folding_every_delivery_posts_for_itself(registry, make_fanout):
    one, two = small_events(2)
    poster = GatedPoster("C")
    fanout = make_fanout(poster, posts_in_flight=None)
    (first,) = sends_in_flight(fanout, poster, one)
    assert fanout.send([Recipient("C", TYPES, [two])]).frames == 1
    poster.gate.set()
    first.result(timeout=60)
    assert sorted(e["seq"] for e in poster.events("C")) == [1, 2]
