"""DynamoDB refusing the store's calls, through the real publish handler and the WebSocket session on
a moto server: throttling (absorbed by botocore's retries, or beyond them), conditional-check failures
(head races lost) and what a producer's retry with the same ids then stores. Whatever the fault, each
stored event is there once, the seqs have no gap, retries are bounded, and a metric counts it."""

# ruff: noqa: F811 - the fixtures `dynamodb`, `moto_url` and `signing_key` come from tests/faults/in_process.py

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from handlers import composition
from streaming import cursor as cursors
from streaming.settings import Settings
from streaming.store import EventStore
from streaming.store.commit import TAIL_EVENTS
from tests.conftest import CONNECTIONS_TABLE, TABLE, Clock, signal
from tests.faults.in_process import (  # noqa: F401 - fixtures among them
    WebSocketConnection,
    dynamodb,
    event_ids,
    metric,
    metric_in,
    moto_url,
    signing_key,
    sse,
    token,
)
from tests.faults.injection import CONDITION_FAILED, THROTTLED, THROTTLING, Faults
from tests.local.test_handlers import call

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("handler_environment")]
ATTEMPTS_PER_CALL = 5  # composition's client: standard retry mode, 4 retries


@pytest.fixture
def faults() -> Faults:
    """Faults on the client the handlers use."""
    return Faults(composition.dynamodb())


@pytest.fixture
def clock(monkeypatch, settings: Settings) -> Clock:
    """The handlers' store on a clock the test moves (past the claim timeout)."""
    now = Clock()
    store = EventStore(
        composition.dynamodb(), TABLE, settings.streams_by_type, settings.replay_window_seconds, clock=now
    )
    monkeypatch.setattr(composition, "store", lambda: store)
    return now


def stream_log(dynamodb: Any, stream: str = "market") -> list[tuple[int, str]]:
    """(seq, id) of every event the stream holds, the head's batch included, in seq order."""
    found: dict[int, str] = {}
    for raw in dynamodb.scan(TableName=TABLE, ConsistentRead=True)["Items"]:
        if raw["pk"]["S"] != f"stream#{stream}":
            continue
        for item in [entry["M"] for entry in raw["batch"]["L"]] if raw["sk"]["N"] == "0" else [raw]:
            found[int(item["sk"]["N"])] = item["id"]["S"]
    return sorted(found.items())


def claimed(dynamodb: Any, event_id: str) -> bool:
    """The id's claim exists (the item the store writes first)."""
    claim = {"pk": {"S": f"event#{event_id}"}, "sk": {"N": "0"}}
    return "Item" in dynamodb.get_item(TableName=TABLE, Key=claim, ConsistentRead=True)


def head_commit_of(event_id: str = ""):
    """The request that moves a stream's head to carry `event_id` (the commit point; any event's)."""
    return lambda request: (
        "#batch" in request.get("ExpressionAttributeNames", {})
        and event_id in json.dumps(request["ExpressionAttributeValues"])
    )


def rate_bucket(request: dict[str, Any]) -> bool:
    """The request that takes a publish from the publisher's rate-limit bucket (in the events table)."""
    return str(request.get("Key", {}).get("pk", {}).get("S", "")).startswith("publisher#")


@pytest.mark.parametrize(
    ("operation", "code", "when"),
    [
        ("UpdateItem", THROTTLING, rate_bucket),
        ("GetItem", THROTTLED, lambda request: True),
        ("PutItem", THROTTLING, lambda request: True),
        ("UpdateItem", THROTTLED, head_commit_of()),
    ],
    ids=["rate limit", "head read", "id claim", "head commit"],
)
def test_throttling_within_botocores_retries_is_absorbed_and_counted(
    dynamodb, faults, capsys, operation, code, when
):
    batch = [signal() for _ in range(3)]
    faults.refuse(operation, code, times=ATTEMPTS_PER_CALL - 1, when=when)  # all but a call's last attempt
    status, body = call("POST", "/events", {"events": batch})
    assert status == 201, body
    assert [(r["seq"], r["duplicate"]) for r in body["events"]] == [(1, False), (2, False), (3, False)]
    assert stream_log(dynamodb) == [(seq, raw["id"]) for seq, raw in enumerate(batch, 1)]
    assert faults.refused == Counter({operation: ATTEMPTS_PER_CALL - 1})
    assert metric(capsys, "StoreThrottles", operation=operation) == ATTEMPTS_PER_CALL - 1
    assert "TransactWriteItems" not in faults.attempts  # the store uses no transaction, so no conflict


def test_throttling_past_the_retries_is_store_unavailable_and_the_producers_retry_stores_each_event_once(
    dynamodb, faults, clock, capsys
):
    """The commit of a batch is throttled on every attempt: nothing is stored, and its ids stay
    claimed (the outcome was unknown to its publisher) until the claims time out; the producer's
    retries with the same ids then store the batch, each event once."""
    batch = [signal() for _ in range(3)]
    faults.refuse("UpdateItem", THROTTLED, times=float("inf"), when=head_commit_of(batch[1]["id"]))
    status, body = call("POST", "/events", {"events": batch})
    assert (status, body["error"]["code"]) == (503, "store_unavailable")
    assert faults.refused["UpdateItem"] == ATTEMPTS_PER_CALL  # bounded: one call's attempts, then given up
    assert stream_log(dynamodb) == []
    assert [claimed(dynamodb, raw["id"]) for raw in batch] == [True, True, True]
    assert metric(capsys, "StoreThrottles", operation="UpdateItem") == ATTEMPTS_PER_CALL

    faults.heal()
    status, body = call("POST", "/events", {"events": batch})  # at once: the claim may still be in flight
    assert (status, body["error"]["code"]) == (409, "publish_in_progress")
    clock.advance(121)  # past the claim timeout: the retry takes the claim over
    status, body = call("POST", "/events", {"events": batch})
    assert status == 201, body
    assert [(r["seq"], r["duplicate"]) for r in body["events"]] == [(1, False), (2, False), (3, False)]
    assert stream_log(dynamodb) == [(seq, raw["id"]) for seq, raw in enumerate(batch, 1)]
    assert call("POST", "/events", {"events": batch})[0] == 200  # and again: all three are duplicates
    print(f"throttled past the retries: {dict(faults.refused)} attempts refused, then 503, 409, 201, 200")


def test_a_rate_limit_dynamodb_cannot_take_is_store_unavailable_with_nothing_claimed_and_a_retry_stores(
    dynamodb, faults, capsys
):
    """The publisher's rate-limit bucket (an item of the events table, taken before anything is
    claimed) throttled on every attempt: 503 `store_unavailable`, nothing claimed or stored, so the
    producer's retry at once stores the batch."""
    batch = [signal() for _ in range(2)]
    faults.refuse("UpdateItem", THROTTLED, times=float("inf"), when=rate_bucket)
    status, body = call("POST", "/events", {"events": batch})
    assert (status, body["error"]["code"]) == (503, "store_unavailable")
    assert faults.refused["UpdateItem"] == ATTEMPTS_PER_CALL
    assert [claimed(dynamodb, raw["id"]) for raw in batch] == [False, False]
    assert metric(capsys, "StoreThrottles", operation="UpdateItem") == ATTEMPTS_PER_CALL
    faults.heal()
    status, body = call("POST", "/events", {"events": batch})
    assert (status, [r["seq"] for r in body["events"]]) == (201, [1, 2])
    assert stream_log(dynamodb) == [(1, batch[0]["id"]), (2, batch[1]["id"])]


def test_head_races_lost_are_retried_by_the_store_not_botocore_and_counted(dynamodb, faults, capsys):
    batch = [signal() for _ in range(2)]
    faults.refuse("UpdateItem", CONDITION_FAILED, times=5, when=head_commit_of(batch[1]["id"]))
    status, body = call("POST", "/events", {"events": batch})
    assert status == 201, body
    assert [r["seq"] for r in body["events"]] == [1, 2]
    assert stream_log(dynamodb) == [(1, batch[0]["id"]), (2, batch[1]["id"])]
    assert metric(capsys, "SequenceConflicts") == 5
    assert metric(capsys, "StoreThrottles") == 0


def test_head_races_lost_on_every_attempt_are_stream_contended_and_a_retry_at_once_stores_once(
    dynamodb, faults, settings, monkeypatch, capsys
):
    """The store gives up after its commit attempts (a few here, 200 deployed), releasing the claim,
    since nothing was committed: the producer's immediate retry stores the event."""
    store = EventStore(
        composition.dynamodb(),
        TABLE,
        settings.streams_by_type,
        settings.replay_window_seconds,
        max_commit_attempts=4,
    )
    monkeypatch.setattr(composition, "store", lambda: store)
    raw = signal()
    faults.refuse("UpdateItem", CONDITION_FAILED, times=float("inf"), when=head_commit_of(raw["id"]))
    status, body = call("POST", "/events", raw)
    assert (status, body["error"]["code"]) == (503, "stream_contended")
    assert faults.refused["UpdateItem"] == 4  # the store's attempts; botocore retries none of them
    assert stream_log(dynamodb) == []
    faults.heal()
    status, body = call("POST", "/events", raw)
    assert (status, body["seq"], body["duplicate"]) == (201, 1, False)
    assert stream_log(dynamodb) == [(1, raw["id"])]


def test_a_websocket_client_gets_its_answers_through_throttling_and_an_error_it_can_repeat_past_it(
    dynamodb, faults, monkeypatch, capsys
):
    """The route handler on the same store: subscribe and replay with their reads throttled within
    botocore's retries are answered as usual; a replay whose query is throttled on every attempt is
    answered `internal_error` (docs/protocol.md: send the message again), and sent again, served."""
    connection = WebSocketConnection(monkeypatch)
    route, answers = connection.route, connection.answers
    published = [signal() for _ in range(TAIL_EVENTS + 1)]
    assert call("POST", "/events", {"events": published[:-1]})[0] == 201
    assert call("POST", "/events", published[-1])[0] == 201  # the others now below the head's tail

    faults.refuse("PutItem", THROTTLED, times=ATTEMPTS_PER_CALL - 1)  # registering the connection
    route("$connect")
    faults.refuse("GetItem", THROTTLING, times=ATTEMPTS_PER_CALL - 1)
    subscribed = route("subscribe", {"action": "subscribe", "types": ["signal.created"], "id": "s"})
    assert (subscribed["type"], cursors.decode(subscribed["cursor"])) == (
        "subscribed",
        {"market": len(published)},
    )

    replay = {"action": "replay", "last": 3, "id": "r"}
    faults.refuse("Query", THROTTLED, times=float("inf"))
    failed = route("replay", replay)
    assert (failed["type"], failed["code"], failed["id"]) == ("error", "internal_error", "r")
    assert faults.refused["Query"] == ATTEMPTS_PER_CALL
    faults.heal()
    answers.posts.clear()
    assert route("replay", replay)["type"] == "replay"  # its summary, after the events
    replayed = [event["id"] for post in answers.posts for event in post.get("events", [])]
    assert replayed == [raw["id"] for raw in published[-3:]]
    assert metric(capsys, "StoreThrottles") == 2 * (ATTEMPTS_PER_CALL - 1) + ATTEMPTS_PER_CALL


def test_an_sse_request_is_served_through_throttled_reads_and_refused_as_the_servers_fault_past_them(
    dynamodb, faults, signing_key, capsys
):
    """The SSE app on the same store: its plan and replay read through throttling within botocore's
    retries; a head read throttled on every attempt is a 500 `internal_error` (docs/protocol.md: try
    again), not an authentication failure; the next request is served."""
    published = [signal() for _ in range(3)]
    assert call("POST", "/events", {"events": published})[0] == 201
    from_start = cursors.encode({"market": 0})
    faults.refuse("GetItem", THROTTLED, times=ATTEMPTS_PER_CALL - 1)
    faults.refuse("Query", THROTTLING, times=ATTEMPTS_PER_CALL - 1)
    served = sse(token(), cursor=from_start)
    assert (served.status_code, event_ids(served)) == (200, [raw["id"] for raw in published])

    faults.refuse("GetItem", THROTTLED, times=float("inf"))
    refused = sse(token(), cursor=from_start)
    assert (refused.status_code, refused.json()["error"]["code"]) == (500, "internal_error")
    output = capsys.readouterr().out
    assert metric_in(output, "AuthFailures") == 0
    assert metric_in(output, "StoreThrottles") >= 2 * (ATTEMPTS_PER_CALL - 1) + ATTEMPTS_PER_CALL
    faults.heal()
    assert event_ids(sse(token(), cursor=from_start)) == [raw["id"] for raw in published]


def test_a_fan_out_that_cannot_find_its_audience_fails_no_publish_and_the_subscriber_repairs_the_gap(
    dynamodb, faults, monkeypatch, capsys
):
    """The subscriptions' query throttled on every attempt while a publish fans out: the event is
    stored and the publish answers 201 (live delivery never fails a publish), the frame is counted as
    failed, and the next event's `prev` shows the subscriber the gap, which its replay fills."""
    connection = WebSocketConnection(monkeypatch)  # the fan-out posts through the same recorder
    connection.route("$connect")
    connection.route("subscribe", {"action": "subscribe", "types": ["signal.created"]})
    first, missed, last = signal(), signal(), signal()
    assert call("POST", "/events", first)[0] == 201
    faults.refuse("Query", THROTTLED, times=float("inf"), when=lambda r: r["TableName"] == CONNECTIONS_TABLE)
    assert call("POST", "/events", missed)[0] == 201
    assert metric(capsys, "FramesFailed") == 1
    faults.heal()
    assert call("POST", "/events", last)[0] == 201
    live = [event for post in connection.answers.posts for event in post.get("events", [])]
    assert [(event["id"], event["prev"]) for event in live] == [(first["id"], 0), (last["id"], 2)]
    # prev 2 is ahead of the 1 it has: it replays after its position.
    connection.answers.posts.clear()
    position = cursors.encode({"market": 1})
    assert connection.route("replay", {"action": "replay", "cursor": position})["type"] == "replay"
    replayed = [event["id"] for post in connection.answers.posts for event in post.get("events", [])]
    assert replayed == [missed["id"], last["id"]]
