"""The event store on moto: gap-free sequences, idempotency, crash recovery, replay."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from streaming.dynamo import deserialize, serialize
from streaming.errors import StreamingError
from streaming.events import Envelope, NewEvent, parse_new_event
from streaming.replay import replay_after, replay_latest
from streaming.store import EventStore, Step
from streaming.store.commit import TAIL_EVENTS
from streaming.store.items import envelope_of, event_item
from tests.conftest import TABLE, example, signal

pytestmark = pytest.mark.events


def events(settings, *raws):
    return [parse_new_event(raw, settings.catalog, settings.max_event_bytes) for raw in raws]


def stream_items(dynamodb, stream):
    response = dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk AND sk > :zero",
        ExpressionAttributeValues={":pk": {"S": f"stream#{stream}"}, ":zero": {"N": "0"}},
        ConsistentRead=True,
    )
    return [(int(item["sk"]["N"]), item["id"]["S"]) for item in response["Items"]]


def logged(store, settings):
    """(seq, id) of every event in the log, as a subscriber seeing everything would get them."""
    return [(e.seq, e.id) for e in store.after({}, frozenset(settings.streams_by_type), 1000).events]


def count_requests(dynamodb):
    """A Counter of the DynamoDB operations the client makes from now on."""
    calls: Counter[str] = Counter()
    dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))
    return calls


def claim_key(event_id):
    return {"pk": {"S": f"event#{event_id}"}, "sk": {"N": "0"}}


def fresh_store(dynamodb, settings, clock, **options):
    return EventStore(
        dynamodb, TABLE, settings.streams_by_type, settings.replay_window_seconds, clock=clock, **options
    )


class Crash(Exception):
    pass


def once(step, action):
    """A store hook that runs `action` the first time an append reaches `step`."""
    pending = [True]

    def hook(reached):
        if reached is step and pending:
            pending.clear()
            action()

    return hook


def crash_at(step):
    """A store hook that crashes the publisher the first time an append reaches `step`."""

    def crash():
        raise Crash(step)

    return once(step, crash)


def test_an_envelope_and_its_item_map_both_ways_under_the_stored_attribute_names():
    envelope = Envelope(
        id="e-1",
        type="signal.created",
        stream="market",
        seq=7,
        prev=3,
        ts="2026-11-27T08:14:03.512Z",
        schema_version=2,
        data={"note": ["é", 1.5]},
        producer="p",
        key="k",
        type_heads={"signal.created": 7, "decision.made": 5},
    )
    item = event_item(envelope, expires_at=1234)
    assert item == {
        "pk": "stream#market",
        "sk": 7,
        "id": "e-1",
        "type": "signal.created",
        "ts": "2026-11-27T08:14:03.512Z",
        "prev": 3,
        "heads": {"signal.created": 7, "decision.made": 5},
        "schema_version": 2,
        "producer": "p",
        "data": '{"note":["é",1.5]}',
        "key": "k",
        "expires_at": 1234,
    }
    read_back = envelope_of(deserialize(serialize(item)))  # numbers come back as Decimal
    assert (read_back, read_back.type_heads) == (envelope, envelope.type_heads)
    assert all(type(n) is int for n in (read_back.seq, read_back.prev, read_back.schema_version))
    without_key = event_item(replace(envelope, key=None), expires_at=1234)
    assert "key" not in without_key and envelope_of(without_key).key is None


def test_sequences_are_per_stream_and_start_at_one(store, settings):
    results = store.append(
        events(
            settings, signal(), example("risk.alert", settings), signal(), example("system.status", settings)
        ),
        "p",
    )
    assert [(r.stream, r.seq) for r in results] == [("market", 1), ("risk", 1), ("market", 2), ("ops", 1)]
    assert store.heads() == {"market": 2, "ops": 1, "risk": 1}


def test_prev_links_each_event_to_the_previous_one_of_its_type(store, settings):
    store.append(
        events(
            settings,
            signal(),
            example("proposal.created", settings),
            signal(),
            example("proposal.updated", settings),
        ),
        "p",
    )
    page = store.after({}, frozenset(settings.streams_by_type), 10)
    assert [(e.type, e.seq, e.prev) for e in page.events] == [
        ("signal.created", 1, 0),
        ("proposal.created", 2, 0),
        ("signal.created", 3, 1),
        ("proposal.updated", 4, 0),
    ]


def test_republishing_an_id_stores_nothing_and_returns_the_original_seq(store, settings, dynamodb):
    raw = signal()
    [first] = store.append(events(settings, raw), "p")
    [again] = store.append(events(settings, raw), "p")
    assert (again.seq, again.ts, again.duplicate, first.duplicate) == (first.seq, first.ts, True, False)
    assert logged(store, settings) == [(1, raw["id"])]


def test_reusing_an_id_for_different_content_is_a_conflict(store, settings):
    raw = signal()
    store.append(events(settings, raw), "p")
    raw["data"]["strength"] = 0.1
    with pytest.raises(StreamingError) as raised:
        store.append(events(settings, raw), "p")
    assert raised.value.error.code == "id_conflict"


def test_crash_before_committing_is_taken_over_after_the_claim_timeout(settings, dynamodb, clock):
    raw = signal()
    store = fresh_store(dynamodb, settings, clock, at_step=crash_at(Step.CLAIMED))
    with pytest.raises(Crash):
        store.append(events(settings, raw), "p")
    retrying = fresh_store(dynamodb, settings, clock, pending_wait_seconds=0.1)
    with pytest.raises(StreamingError) as raised:  # the claim is young: maybe still in flight
        retrying.append(events(settings, raw), "p")
    assert raised.value.error.code == "publish_in_progress"
    clock.advance(121)
    [result] = retrying.append(events(settings, raw), "p")
    assert (result.seq, result.duplicate) == (1, False)
    assert logged(store, settings) == [(1, raw["id"])]


def test_crash_after_committing_is_found_again_not_stored_twice(settings, dynamodb, clock):
    raw = signal()
    store = fresh_store(dynamodb, settings, clock, at_step=crash_at(Step.COMMITTED))
    with pytest.raises(Crash):
        store.append(events(settings, raw), "p")
    clock.advance(121)
    [result] = fresh_store(dynamodb, settings, clock).append(events(settings, raw), "p")
    assert (result.seq, result.duplicate) == (1, True)
    assert [e.id for e in store.after({}, frozenset({"signal.created"}), 10).events] == [raw["id"]]


def test_the_last_events_live_in_the_heads_tail_until_it_is_full_then_go_out_with_their_claims(
    settings, dynamodb, clock
):
    store = fresh_store(dynamodb, settings, clock)
    published = events(settings, *(signal() for _ in range(TAIL_EVENTS)))
    tail = store.append(published, "p")
    assert stream_items(dynamodb, "market") == []  # committed in the head only
    assert "seq" not in dynamodb.get_item(TableName=TABLE, Key=claim_key(tail[0].id))["Item"]
    assert logged(store, settings) == [(r.seq, r.id) for r in tail]
    [later] = store.append(events(settings, signal()), "p")
    assert stream_items(dynamodb, "market") == [(r.seq, r.id) for r in tail]  # copied out first
    for event, result in zip(published, tail, strict=True):  # and each claim completed with them
        claim = deserialize(dynamodb.get_item(TableName=TABLE, Key=claim_key(result.id))["Item"])
        assert (claim["seq"], claim["ts"], claim["digest"]) == (result.seq, result.ts, event.digest())
    assert logged(store, settings) == [(r.seq, r.id) for r in [*tail, later]]


def test_a_republished_id_resolves_from_the_tail_before_its_claim_is_completed(settings, dynamodb, clock):
    raw = signal()
    store = fresh_store(dynamodb, settings, clock)
    [first] = store.append(events(settings, raw, signal()), "p")[:1]
    retrying = fresh_store(dynamodb, settings, clock, pending_wait_seconds=0.1)  # would not wait for it
    [again] = retrying.append(events(settings, raw), "p")
    assert (again.seq, again.ts, again.duplicate) == (first.seq, first.ts, True)
    assert len(logged(store, settings)) == 2


def test_a_requests_events_of_one_stream_commit_together_in_one_head_update(settings, dynamodb, clock):
    store = fresh_store(dynamodb, settings, clock)
    calls = count_requests(dynamodb)
    first = store.append(events(settings, *(signal() for _ in range(10))), "p")
    assert calls == Counter(GetItem=1, PutItem=10, UpdateItem=1)  # the head, a claim per event, the commit
    calls.clear()
    second = store.append(events(settings, *(signal() for _ in range(10))), "p")
    # Its own head, known; the tail is full, so the first ten and their claims go out in one put.
    assert calls == Counter(PutItem=10, UpdateItem=1, BatchWriteItem=1)
    assert [r.seq for r in first + second] == list(range(1, 21))
    assert [r.envelope.prev for r in second if r.envelope] == list(range(10, 20))
    assert logged(store, settings) == [(r.seq, r.id) for r in first + second]


def test_with_an_executor_a_requests_claims_are_made_at_once(settings, dynamodb, clock):
    size = 5
    together = threading.Barrier(size, timeout=30)  # each claim waits until all have been sent

    def claim_waits_for_the_others(model, **_):
        if model.name == "PutItem":
            together.wait()

    dynamodb.meta.events.register("before-call.dynamodb", claim_waits_for_the_others)
    with ThreadPoolExecutor(size) as executor:
        store = fresh_store(dynamodb, settings, clock, executor=executor)
        results = store.append(events(settings, *(signal() for _ in range(size))), "p")
    assert [r.seq for r in results] == list(range(1, size + 1))


def test_a_lone_publishers_single_events_cost_two_requests_and_a_put_per_tail(settings, dynamodb, clock):
    store = fresh_store(dynamodb, settings, clock)
    store.append(events(settings, signal()), "p")
    calls = count_requests(dynamodb)
    for _ in range(TAIL_EVENTS):
        store.append(events(settings, signal()), "p")
    assert calls == Counter(PutItem=TAIL_EVENTS, UpdateItem=TAIL_EVENTS, BatchWriteItem=1)


def test_a_known_head_another_publisher_moved_costs_one_lost_race(settings, dynamodb, clock):
    mine, theirs = fresh_store(dynamodb, settings, clock), fresh_store(dynamodb, settings, clock)
    mine.append(events(settings, signal()), "p")
    theirs.append(events(settings, signal(), signal()), "p")
    [result] = mine.append(events(settings, signal()), "p")
    assert (result.seq, result.conflicts, result.envelope and result.envelope.prev) == (4, 1, 3)
    assert [seq for seq, _ in logged(mine, settings)] == [1, 2, 3, 4]


def test_events_of_several_streams_keep_their_request_order_in_the_answer(store, settings):
    raws = [signal(), example("risk.alert", settings), signal(), example("risk.alert", settings)]
    results = store.append(events(settings, *raws), "p")
    assert [(r.id, r.stream, r.seq) for r in results] == [
        (raws[0]["id"], "market", 1),
        (raws[1]["id"], "risk", 1),
        (raws[2]["id"], "market", 2),
        (raws[3]["id"], "risk", 2),
    ]


def test_a_batch_too_large_for_one_head_item_commits_in_several(store, settings, dynamodb):
    large = [NewEvent(id=f"big-{n}", type="signal.created", data={"blob": "x" * 60_000}) for n in range(8)]
    calls = count_requests(dynamodb)
    results = store.append(large, "p")
    assert [r.seq for r in results] == list(range(1, 9))
    assert calls["UpdateItem"] == 4  # two ~60 KB events to a commit: old and new batch share the head
    assert [e.id for e in store.after({}, frozenset({"signal.created"}), 10).events] == [e.id for e in large]


def test_a_batch_refused_at_its_fence_frees_its_ids_and_those_of_the_batches_after_it(
    settings, dynamodb, clock
):
    large = [NewEvent(id=f"big-{n}", type="signal.created", data={"blob": "x" * 60_000}) for n in range(6)]
    reached = []

    def pause_before_the_second_commit(step):
        reached.append(step)
        if reached.count(Step.CLAIMED) == 2:
            clock.advance(31)  # past the fence of every claim of the request

    store = fresh_store(dynamodb, settings, clock, at_step=pause_before_the_second_commit)
    with pytest.raises(StreamingError) as raised:
        store.append(large, "p")
    assert raised.value.error.code == "stream_contended"
    assert [seq for seq, _ in logged(store, settings)] == [1, 2]  # the first batch only
    retried = fresh_store(dynamodb, settings, clock).append(large, "p")  # at once: nothing in flight
    assert [(r.seq, r.duplicate) for r in retried] == [
        (1, True),
        (2, True),
        *((n, False) for n in range(3, 7)),
    ]


def test_a_head_written_before_batches_is_read_and_moved_on(store, settings, dynamodb, clock):
    old = replace(store.append(events(settings, signal()), "p")[0].envelope, seq=1)
    legacy = {"pk": "stream#market", "sk": 0, "seq": 1, "heads": {"signal.created": 1}}
    legacy["last"] = event_item(old, expires_at=int(clock()) + 3600)
    dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "stream#market"}, "sk": {"N": "1"}})
    dynamodb.put_item(TableName=TABLE, Item=serialize(legacy))
    assert store.get("market", 1) == old
    [result] = fresh_store(dynamodb, settings, clock).append(events(settings, signal()), "p")
    assert (result.seq, result.envelope and result.envelope.prev) == (2, 1)
    assert logged(store, settings)[0] == (1, old.id)
    assert (
        "last"
        not in dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "stream#market"}, "sk": {"N": "0"}})[
            "Item"
        ]
    )


def test_a_claimant_past_its_fence_never_commits(settings, dynamodb, clock):
    # Paused longer than the fence between claim and commit.
    store = fresh_store(dynamodb, settings, clock, at_step=once(Step.CLAIMED, lambda: clock.advance(31)))
    raw = signal()
    with pytest.raises(StreamingError) as raised:
        store.append(events(settings, raw), "p")
    assert raised.value.error.code == "stream_contended"
    assert store.heads()["market"] == 0
    [retried] = store.append(events(settings, raw), "p")  # the refused claim was released
    assert (retried.seq, retried.duplicate) == (1, False)


def test_rows_removed_by_ttl_never_free_their_seq_for_reuse(store, settings, dynamodb, clock):
    store.append(events(settings, signal(), signal(), signal()), "p")
    for seq in (1, 2):  # what DynamoDB TTL does, lazily, after the replay window
        dynamodb.delete_item(TableName=TABLE, Key={"pk": {"S": "stream#market"}, "sk": {"N": str(seq)}})
    clock.advance(settings.replay_window_seconds + 1)
    [result] = fresh_store(dynamodb, settings, clock).append(events(settings, signal()), "p")
    assert result.seq == 4
    page = store.after({"market": 1}, frozenset({"signal.created"}), 10)
    assert ([e.seq for e in page.events], page.truncated) == ([4], True)


def test_paging_keeps_each_stream_in_seq_order_when_publisher_clocks_disagree(store, settings, clock):
    store.append(events(settings, signal()), "p")
    clock.advance(-0.5)  # a publisher host whose clock is behind
    store.append(events(settings, signal()), "p")
    clock.advance(0.2)
    store.append(events(settings, example("risk.alert", settings)), "p")
    everything = frozenset(settings.streams_by_type)
    served, cursor = [], {}
    for _ in range(5):
        page = store.after(cursor, everything, 2)
        served.extend((e.stream, e.seq) for e in page.events)
        cursor = page.cursor
        if not page.more:
            break
    assert sorted(served) == [("market", 1), ("market", 2), ("risk", 1)]
    assert [s for s in served if s[0] == "market"] == [("market", 1), ("market", 2)]


def test_a_backend_that_does_not_return_the_existing_claim_still_resolves_it(
    store, settings, dynamodb, monkeypatch
):
    raw = signal()
    [first] = store.append(events(settings, raw), "p")
    original = dynamodb.put_item

    def forgetful(**kwargs):
        try:
            return original(**kwargs)
        except dynamodb.exceptions.ConditionalCheckFailedException as error:
            error.response.pop("Item", None)
            raise

    monkeypatch.setattr(dynamodb, "put_item", forgetful)
    [again] = store.append(events(settings, raw), "p")
    assert (again.seq, again.duplicate) == (first.seq, True)


def test_replay_in_pages_serves_every_event_once_in_order(store, settings):
    raws = [signal() if i % 3 else example("risk.alert", settings) for i in range(11)]
    store.append(events(settings, *raws), "p")
    everything = frozenset(settings.streams_by_type)
    served, cursor = [], {}
    for _ in range(10):
        page = store.after(cursor, everything, 3)
        served.extend(page.events)
        cursor = page.cursor
        if not page.more:
            break
    assert sorted(e.id for e in served) == sorted(raw["id"] for raw in raws)  # each once
    for stream in ("market", "risk"):  # each stream in request order; streams interleaved by ts
        assert [e.id for e in served if e.stream == stream] == [
            raw["id"] for raw in raws if settings.streams_by_type[raw["type"]] == stream
        ]
    assert served == sorted(served, key=lambda e: (e.ts, e.stream, e.seq))
    assert store.after(cursor, everything, 3).events == []


def test_replay_is_filtered_by_role_and_the_cursor_moves_past_hidden_events(store, settings):
    store.append(
        events(settings, signal(), example("risk.alert", settings), example("decision.made", settings)), "p"
    )
    viewer = replay_after(store, settings.roles, "viewer", None)
    assert [e.type for e in viewer.events] == ["signal.created"]
    approver = replay_after(store, settings.roles, "approver", None, types=["risk.alert", "system.status"])
    assert [e.type for e in approver.events] == ["risk.alert"]
    store.append(events(settings, signal()), "p")
    from streaming import cursor as cursors

    resumed = replay_after(store, settings.roles, "viewer", cursors.encode(viewer.cursor))
    assert [(e.type, e.seq) for e in resumed.events] == [("signal.created", 3)]


def test_latest_returns_the_last_n_a_role_may_see_oldest_first(store, settings):
    raws = [signal(), example("decision.made", settings), signal(), example("proposal.created", settings)]
    store.append(events(settings, *raws), "p")
    page = replay_latest(store, settings.roles, "viewer", 2)
    assert [e.id for e in page.events] == [raws[2]["id"], raws[3]["id"]]
    assert page.cursor["market"] == 4


def test_expired_events_are_not_replayed_even_before_ttl_deletes_them(store, settings, clock):
    store.append(events(settings, signal(), signal()), "p")
    cursor = store.after({}, frozenset({"signal.created"}), 1).cursor
    clock.advance(settings.replay_window_seconds + 1)
    store.append(events(settings, signal()), "p")
    page = store.after(cursor, frozenset({"signal.created"}), 10)
    assert [e.seq for e in page.events] == [3]
    assert page.truncated  # seq 2 left the window before this cursor's holder saw it
    assert not store.after({}, frozenset({"signal.created"}), 10).truncated
    assert [e.seq for e in store.latest(frozenset({"signal.created"}), 10).events] == [3]


def test_scanning_is_bounded_and_resumable_when_nothing_is_visible(dynamodb, settings, clock):
    store = fresh_store(dynamodb, settings, clock, max_scan=3)
    store.append(events(settings, *[example("decision.made", settings) for _ in range(5)], signal()), "p")
    first = store.after({}, frozenset({"signal.created"}), 10)
    assert (first.events, first.more, first.cursor["market"]) == ([], True, 3)
    second = store.after(first.cursor, frozenset({"signal.created"}), 10)
    assert [e.seq for e in second.events] == [6]


def test_replay_limits_are_checked(store, settings):
    with pytest.raises(StreamingError) as raised:
        replay_after(store, settings.roles, "admin", None, limit=0)
    assert raised.value.error.code == "invalid_query"
    with pytest.raises(StreamingError):
        replay_latest(store, settings.roles, "admin", 1001)
