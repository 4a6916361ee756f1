"""One WebSocket connection's session on moto: greeting, answers, replay frames and cursors, errors with
request ids, the rate limit and closing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streaming import codec
from streaming import constants as c
from streaming import cursor as cursors
from streaming.ratelimit import TokenBucket
from streaming.session import MAX_STRIKES, Session, close_expired, send_reconnect_notices
from tests.conftest import example, signal

pytestmark = pytest.mark.connections
GENEROUS = TokenBucket(rate=1000, burst=1000)


class FakeManagement:
    """Records what the session posts (decoded) and which connections it closes."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.deletes: list[str] = []

    def post(self, connection_id: str, data: bytes) -> int:
        self.posts.append((connection_id, json.loads(data)))
        return 200

    def delete(self, connection_id: str) -> int:
        self.deletes.append(connection_id)
        return 204

    def take(self) -> list[dict[str, Any]]:
        """The messages posted since the last take."""
        messages = [message for _, message in self.posts]
        self.posts.clear()
        return messages


@pytest.fixture
def management():
    return FakeManagement()


@pytest.fixture
def make_session(registry, store, settings, management):
    def make(bucket=GENEROUS, compress_above=8192):
        return Session(
            registry, store, settings.roles, settings.catalog.types, management, bucket, compress_above
        )

    return make


@pytest.fixture
def session(make_session):
    return make_session()


def open_connection(session, clock, connection_id="C1", role="viewer", lifetime=3600):
    return session.connect(connection_id, {"sub": "alice", "role": role, "exp": int(clock.now) + lifetime})


def send(session, management, message, connection_id="C1") -> list[dict[str, Any]]:
    raw = message if isinstance(message, str | bytes) else json.dumps(message)
    session.receive(connection_id, raw)
    return management.take()


def greeted(session, management, clock, role="viewer", connection_id="C1"):
    """A connection whose welcome went out already."""
    connection = open_connection(session, clock, connection_id, role)
    send(session, management, {"action": "ping"}, connection_id)
    return connection


def events_of(messages) -> list[dict[str, Any]]:
    return [codec.decode_event(e) for m in messages if m["type"] == "events" for e in m["events"]]


def proposal_update(settings, size: int) -> dict[str, Any]:
    """A valid proposal.updated whose data is about `size` bytes."""
    event = example("proposal.updated", settings)
    event["data"] = {**event["data"], "changes": {f"note{i}": "n" * 1900 for i in range(size // 1900)}}
    return event


def test_the_first_message_is_preceded_by_a_welcome_and_later_ones_are_not(
    session, management, clock, publisher, settings
):
    publisher.publish([signal(), example("risk.alert", settings)], "tests")
    connection = open_connection(session, clock, role="analyst")
    first = send(session, management, {"action": "ping", "id": "p1"})
    assert [m["type"] for m in first] == ["welcome", "pong"]
    welcome = first[0]
    assert welcome["connection_id"] == "C1" and welcome["role"] == "analyst"
    assert welcome["allowed_types"] == sorted(settings.roles.allowed("analyst"))
    assert welcome["heads"] == {"market": 1, "ops": 0}  # not risk: an analyst does not see it
    assert welcome["expires_at"] == connection.expires_at
    assert welcome["server_time"].endswith("Z")
    assert [m["type"] for m in send(session, management, {"action": "ping"})] == ["pong"]
    assert all(cid == "C1" for cid, _ in management.posts)


def test_ping_answers_pong_with_the_heads_and_the_request_id(session, management, clock, publisher):
    greeted(session, management, clock)
    publisher.publish([signal(), signal()], "tests")
    (pong,) = send(session, management, {"action": "ping", "id": "p2"})
    assert (pong["type"], pong["id"], pong["heads"]) == ("pong", "p2", {"market": 2})  # a viewer's streams


def test_subscribe_narrows_to_the_role_and_starts_at_the_heads(
    session, management, clock, publisher, settings, registry
):
    publisher.publish([signal(), signal(), example("risk.alert", settings)], "tests")
    greeted(session, management, clock, role="viewer")
    (answer,) = send(
        session, management, {"action": "subscribe", "types": ["signal.created", "risk.alert"], "id": "s1"}
    )
    assert answer == {
        "type": "subscribed",
        "id": "s1",
        "types": ["signal.created"],
        "denied": ["risk.alert"],
        "cursor": cursors.encode({"market": 2}),  # the viewer's streams only: it never sees risk
    }
    (subscriber,) = registry.subscribers("signal.created")
    assert subscriber.types == {"signal.created"}
    assert list(registry.subscribers("risk.alert")) == []
    publisher.publish([signal()], "tests")
    (again,) = send(session, management, {"action": "subscribe", "types": ["proposal.created"]})
    assert again["types"] == ["proposal.created", "signal.created"] and again["denied"] == []
    assert cursors.decode(again["cursor"]) == {"market": 3}
    assert registry.get("C1").types == {"signal.created", "proposal.created"}


def test_unsubscribe_answers_what_is_left(session, management, clock, registry):
    greeted(session, management, clock, role="admin")
    send(session, management, {"action": "subscribe", "types": ["risk.alert", "system.status"]})
    (answer,) = send(session, management, {"action": "unsubscribe", "types": ["system.status"], "id": "u"})
    assert answer == {"type": "unsubscribed", "id": "u", "types": ["risk.alert"]}
    assert list(registry.subscribers("system.status")) == []


def test_replay_by_cursor_sends_events_frames_then_a_summary(session, management, clock, publisher, settings):
    before = publisher.publish([signal()], "tests")
    start = cursors.encode({"market": before[0].seq, "risk": 7})  # a position beyond this replay's types
    published = publisher.publish(
        [signal(), example("risk.alert", settings), example("proposal.created", settings), signal()], "tests"
    )
    greeted(session, management, clock, role="viewer")
    send(session, management, {"action": "subscribe", "types": ["signal.created", "risk.alert"]})
    messages = send(session, management, {"action": "replay", "cursor": start, "id": "r1"})
    assert [m["type"] for m in messages][-1] == "replay"
    assert {m["type"] for m in messages[:-1]} == {"events"}
    expected = [a.id for a in published if a.type == "signal.created"]
    assert [e["id"] for e in events_of(messages)] == expected
    summary = messages[-1]
    assert (summary["id"], summary["count"], summary["more"]) == ("r1", 2, False)
    # The viewer's types are all in market; the cursor's other positions are kept, not dropped.
    assert cursors.decode(summary["cursor"]) == {"market": 4, "risk": 7}
    # Each event's prev is the one before it among the subscriber's types, so a client can tell its
    # run of events is complete.
    assert [(e["seq"], e["prev"]) for e in events_of(messages)] == [(2, 1), (4, 2)]


def test_replay_names_types_and_a_limit(session, management, clock, publisher, settings):
    published = publisher.publish([example("proposal.created", settings) for _ in range(5)], "tests")
    greeted(session, management, clock, role="viewer")
    messages = send(
        session, management, {"action": "replay", "cursor": "", "types": ["proposal.created"], "limit": 3}
    )
    assert [e["id"] for e in events_of(messages)] == [a.id for a in published[:3]]
    assert (messages[-1]["count"], messages[-1]["more"]) == (3, True)
    rest = send(
        session,
        management,
        {"action": "replay", "cursor": messages[-1]["cursor"], "types": ["proposal.created"]},
    )
    assert [e["id"] for e in events_of(rest)] == [a.id for a in published[3:]]


def test_replay_last_returns_the_newest_the_role_may_see_with_resumable_frame_cursors(
    make_session, management, clock, publisher, settings
):
    session = make_session(compress_above=10**9)  # uncompressed, so the events need several frames
    raws = []
    for i in range(8):
        raws.append(proposal_update(settings, 9000))
        raws.append(example("risk.alert", settings))  # the viewer never sees these
        if i % 3 == 0:
            raws.append(example("decision.made", settings))  # nor these
    published = publisher.publish(raws, "tests")
    greeted(session, management, clock, role="viewer")
    send(session, management, {"action": "subscribe", "types": ["proposal.updated", "risk.alert"]})

    messages = send(session, management, {"action": "replay", "last": 6, "id": "l6"})
    frames, summary = messages[:-1], messages[-1]
    newest = [a.id for a in published if a.type == "proposal.updated"][-6:]
    assert [e["id"] for e in events_of(frames)] == newest
    assert len(frames) > 1 and all(len(codec.dumps(f).encode()) <= codec.FRAME_BYTES for f in frames)
    assert (summary["type"], summary["id"], summary["count"]) == ("replay", "l6", 6)
    market_head = max(a.seq for a in published if a.stream == "market")
    assert cursors.decode(summary["cursor"]) == {"market": market_head}  # the viewer got no risk.alert

    # The first event's prev is where a client's position starts; each next prev is the event before.
    replayed = events_of(frames)
    previous = [a.seq for a in published if a.type == "proposal.updated"][-7]
    assert [e["prev"] for e in replayed] == [previous] + [e["seq"] for e in replayed[:-1]]
    position = cursors.encode({"market": replayed[2]["seq"]})
    resumed = send(session, management, {"action": "replay", "cursor": position})
    assert [e["id"] for e in events_of(resumed)] == newest[3:]


def test_replay_last_across_streams_resumes_each_stream_where_its_frames_left_it(
    make_session, management, clock, publisher, settings
):
    session = make_session(compress_above=10**9)
    published = []  # interleaved across the two streams (a request commits stream by stream)
    for _ in range(4):
        published += publisher.publish(
            [proposal_update(settings, 9000), example("risk.alert", settings)], "t"
        )
    greeted(session, management, clock, role="approver")
    messages = send(
        session, management, {"action": "replay", "last": 6, "types": ["proposal.updated", "risk.alert"]}
    )
    frames = messages[:-1]
    assert [e["id"] for e in events_of(frames)] == [a.id for a in published[-6:]]
    replayed = events_of(frames)
    for index in range(len(replayed)):  # a position built from what a client has processed so far
        position = _starts(replayed)
        for event in replayed[: index + 1]:
            position[event["stream"]] = event["seq"]
        resumed = send(
            session,
            management,
            {
                "action": "replay",
                "cursor": cursors.encode(position),
                "types": ["proposal.updated", "risk.alert"],
            },
        )
        assert [e["id"] for e in events_of(resumed)] == [e["id"] for e in replayed[index + 1 :]], index


@pytest.mark.parametrize(
    ("message", "code", "echoed"),
    [
        ('{"action": "ping", "id": "m1"', "malformed_json", None),
        (b"\xff\xfe not utf-8", "malformed_json", None),
        ({"action": "publish", "id": "m2"}, "unknown_action", "m2"),
        ({"id": "m3"}, "unknown_action", "m3"),
        ({"action": "ping", "id": "m4", "pad": "x" * 9000}, "message_too_large", "m4"),
        ({"action": "subscribe", "types": ["order.filled"], "id": "m5"}, "unknown_type", "m5"),
        ({"action": "replay", "cursor": "forged", "id": "m6"}, "invalid_cursor", "m6"),
        ({"action": "ping", "id": 7}, "invalid_message", None),
        ({"action": "ping", "id": "x" * 65}, "invalid_message", None),
        ('["ping"]', "invalid_message", None),
        ("", "malformed_json", None),
    ],
)
def test_bad_messages_are_answered_with_their_code_and_a_valid_request_id(
    session, management, clock, message, code, echoed
):
    greeted(session, management, clock)
    (answer,) = send(session, management, message)
    assert (answer["type"], answer["code"], answer.get("id")) == ("error", code, echoed)
    assert ("id" in answer) == (echoed is not None)


def test_a_missing_body_is_answered_not_raised(session, management, clock):
    greeted(session, management, clock)
    session.receive("C1", None)
    ((_, answer),) = management.posts
    assert answer["code"] == "malformed_json"


def test_deeply_nested_json_is_answered_not_raised(session, management, clock):
    greeted(session, management, clock)
    (answer,) = send(session, management, "[" * 5000)
    assert (answer["type"], answer["code"]) == ("error", "malformed_json")


def test_replay_without_subscriptions_or_types_is_invalid(session, management, clock):
    greeted(session, management, clock)
    (answer,) = send(session, management, {"action": "replay", "last": 5, "id": "r0"})
    assert (answer["code"], answer["id"]) == ("invalid_message", "r0")


def test_the_rate_limit_refuses_then_closes_after_max_strikes(make_session, management, clock, registry):
    session = make_session(bucket=TokenBucket(rate=0.001, burst=2))
    open_connection(session, clock)
    answers = [m for _ in range(2) for m in send(session, management, {"action": "ping"})]
    assert [m["type"] for m in answers] == ["welcome", "pong", "pong"]
    for strike in range(1, MAX_STRIKES + 1):
        (answer,) = send(session, management, {"action": "ping", "id": f"x{strike}"})
        assert (answer["code"], answer["id"]) == ("rate_limited", f"x{strike}")
        assert management.deletes == ([] if strike < MAX_STRIKES else ["C1"]), strike


def test_an_admitted_message_resets_the_strikes(make_session, management, clock):
    session = make_session(bucket=TokenBucket(rate=1, burst=1))
    open_connection(session, clock)
    for _ in range(3):
        send(session, management, {"action": "ping"})
        for _ in range(MAX_STRIKES - 1):
            assert send(session, management, {"action": "ping"})[0]["code"] == "rate_limited"
        clock.advance(2)
    assert management.deletes == []


def test_a_message_on_an_expired_connection_closes_it_and_posts_nothing(session, management, clock):
    open_connection(session, clock, lifetime=60)
    clock.advance(61)
    session.receive("C1", json.dumps({"action": "ping"}))
    assert management.posts == []
    assert management.deletes == ["C1"]


def test_a_message_after_disconnect_closes_and_posts_nothing(session, management, clock, registry):
    greeted(session, management, clock)
    session.disconnect("C1")
    assert registry.get("C1") is None
    session.receive("C1", json.dumps({"action": "ping"}))
    assert (management.posts, management.deletes) == ([], ["C1"])


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe"])
def test_a_connection_removed_while_its_message_is_handled_gets_no_answer_and_no_error(
    session, management, clock, registry, monkeypatch, action
):
    greeted(session, management, clock, role="admin")
    send(session, management, {"action": "subscribe", "types": ["risk.alert"]})
    admit = registry.admit

    def admit_then_disconnect(connection_id, bucket):
        admitted = admit(connection_id, bucket)
        registry.remove(connection_id)  # $disconnect runs while this message is being answered
        return admitted

    monkeypatch.setattr(registry, "admit", admit_then_disconnect)
    session.receive("C1", json.dumps({"action": action, "types": ["risk.alert", "system.status"]}))
    assert management.posts == []
    assert registry.get("C1") is None
    assert [list(registry.subscribers(t)) for t in ("risk.alert", "system.status")] == [[], []]


def test_a_failure_inside_answers_internal_error_with_the_request_id(
    session, management, clock, store, monkeypatch
):
    greeted(session, management, clock)

    def unavailable() -> dict[str, int]:
        raise ConnectionError("DynamoDB unavailable")

    monkeypatch.setattr(store, "heads", unavailable)
    [answer] = send(session, management, {"action": "ping", "id": "p7"})
    assert (answer["type"], answer["code"], answer["id"]) == ("error", "internal_error", "p7")


def test_a_replay_frame_given_up_on_stops_the_replay_without_a_summary(
    make_session, management, clock, publisher, settings
):
    session = make_session()
    greeted(session, management, clock)
    send(session, management, {"action": "subscribe", "types": ["signal.created"]})
    publisher.publish([signal() for _ in range(3)], "tests")
    attempts: list[dict[str, Any]] = []

    def throttled(connection_id: str, data: bytes) -> int:
        attempts.append(json.loads(data))
        return 500

    management.post = throttled  # type: ignore[method-assign]
    session._sleep = lambda seconds: None
    send(session, management, {"action": "replay", "last": 3, "id": "r1"})
    assert attempts and all(message["type"] == "events" for message in attempts)  # no summary
    assert len({json.dumps(message) for message in attempts}) == 1  # the first frame, retried


def test_the_sweep_closes_expired_connections_and_retries_those_it_could_not_close(
    session, management, clock, registry
):
    open_connection(session, clock, "DONE", lifetime=5)
    open_connection(session, clock, "STUCK", lifetime=5)
    open_connection(session, clock, "LATER", lifetime=3600)
    clock.advance(6)
    management.delete = lambda connection_id: 204 if connection_id == "DONE" else 0  # type: ignore[method-assign]
    assert close_expired(registry, management) == 1
    assert registry.get("DONE") is None
    assert [connection_id for connection_id, _ in registry.expiry.due()] == ["STUCK"]  # tried again next run
    management.delete = lambda connection_id: 410  # type: ignore[method-assign]  # closed meanwhile
    assert close_expired(registry, management) == 1
    assert registry.expiry.due() == []


def _starts(events: list[dict[str, Any]]) -> dict[str, int]:
    """Per stream, the prev of its first event: where a client that got these events started."""
    starts: dict[str, int] = {}
    for event in events:
        starts.setdefault(event["stream"], event["prev"])
    return starts


def test_the_session_counts_replays_rate_limited_messages_and_retried_posts(
    make_session, management, clock, publisher, capsys
):
    from streaming.observability import metrics

    publisher.publish([signal(), signal()], "tests")
    throttled_once = iter([429])
    answer = management.post
    management.post = lambda connection_id, data: next(throttled_once, None) or answer(connection_id, data)
    session = make_session(bucket=TokenBucket(rate=0.001, burst=2))
    open_connection(session, clock)
    send(session, management, {"action": "replay", "last": 5, "types": ["signal.created"]})  # welcome first
    send(session, management, {"action": "ping"})
    (refused,) = send(session, management, {"action": "ping"})
    assert refused["code"] == "rate_limited"
    metrics.flush_metrics()
    [document] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "Replays" in line]
    assert (document["Replays"], document["EventsReplayed"]) == ([1.0], [2.0])
    assert (document["MessagesRateLimited"], document["DeliveryRetries"]) == ([1.0], [1.0])


def notices(management) -> dict[str, dict[str, Any]]:
    """The reconnect notices posted since the last take, by connection."""
    sent = {connection_id: message for connection_id, message in management.posts}
    management.take()
    return sent


@pytest.mark.reconnect
def test_the_sweep_tells_each_connection_once_to_reconnect_before_it_expires(
    session, management, clock, registry
):
    limited = open_connection(session, clock, "LIMIT", lifetime=86400)  # outlives the connection limit
    hourly = open_connection(session, clock, "TOKEN", lifetime=3600)
    assert send_reconnect_notices(registry, management) == 0
    clock.advance(3600 - c.RECONNECT_NOTICE_SECONDS - 2)  # the token's notice window is a moment away
    assert send_reconnect_notices(registry, management) == 0
    clock.advance(3)
    assert send_reconnect_notices(registry, management) == 1
    [(connection_id, notice)] = notices(management).items()
    assert connection_id == "TOKEN"
    assert notice | {"server_time": None} == {
        "type": "reconnect",
        "reason": "token_expiring",
        "at": hourly.expires_at,
        "server_time": None,
    }
    assert send_reconnect_notices(registry, management) == 0  # once per connection
    clock.advance(limited.expires_at - clock.now - c.RECONNECT_NOTICE_SECONDS + 1)
    assert send_reconnect_notices(registry, management) == 1
    told = notices(management)["LIMIT"]
    assert (told["reason"], told["at"]) == ("connection_limit", limited.expires_at)
    assert send_reconnect_notices(registry, management) == 0


@pytest.mark.reconnect
def test_a_short_lived_token_is_told_halfway_not_at_once(session, management, clock, registry):
    five_minutes = open_connection(session, clock, "SHORT", lifetime=300)
    assert send_reconnect_notices(registry, management) == 0  # not the moment it connected
    clock.advance(150 - 2)
    assert send_reconnect_notices(registry, management) == 0
    clock.advance(3)
    assert send_reconnect_notices(registry, management) == 1
    assert notices(management)["SHORT"]["at"] == five_minutes.expires_at


@pytest.mark.reconnect
def test_an_expired_connection_is_closed_not_told(session, management, clock, registry):
    open_connection(session, clock, "LATE", lifetime=300)
    clock.advance(301)  # the sweep that would have told it never ran
    assert send_reconnect_notices(registry, management) == 0
    assert close_expired(registry, management) == 1


@pytest.mark.reconnect
def test_overlapping_sweeps_claim_a_notice_once(session, management, clock, registry):
    open_connection(session, clock, "C1", lifetime=300)
    clock.advance(200)
    [first] = registry.expiry.notices_due()
    [second] = registry.expiry.notices_due()  # a second sweep read it before the first marked it
    assert registry.expiry.claim(first)
    assert not registry.expiry.claim(second)
    assert registry.expiry.notices_due() == []


@pytest.mark.reconnect
def test_a_notice_that_fails_is_sent_by_the_next_sweep_and_a_gone_connection_is_removed(
    session, management, clock, registry
):
    open_connection(session, clock, "FLAKY", lifetime=300)
    open_connection(session, clock, "GONE", lifetime=300)
    clock.advance(200)
    answers = {"FLAKY": 0, "GONE": 410}  # 0: the request's fate unknown; not retried within a sweep
    management.post = lambda connection_id, data: answers[connection_id]  # type: ignore[method-assign]
    assert send_reconnect_notices(registry, management) == 0
    assert registry.get("GONE") is None and "GONE" not in [
        n.connection_id for n in registry.expiry.notices_due()
    ]
    assert [n.connection_id for n in registry.expiry.notices_due()] == ["FLAKY"]
    del management.post  # answers 200 again
    assert send_reconnect_notices(registry, management) == 1
    assert list(notices(management)) == ["FLAKY"]
