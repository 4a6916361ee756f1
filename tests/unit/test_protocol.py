"""The WebSocket message protocol: every client message parsed or refused with its code."""

from __future__ import annotations

import json

import pytest

from streaming import cursor as cursors
from streaming import protocol
from streaming.errors import ErrorCode, StreamingError
from streaming.events import Envelope
from streaming.results import Page

pytestmark = pytest.mark.connections
TYPES = ["signal.created", "risk.alert", "system.status"]


def parse(message) -> protocol.Request:
    return protocol.parse(message if isinstance(message, str) else json.dumps(message), TYPES)


def refusal(message) -> str:
    with pytest.raises(StreamingError) as refused:
        parse(message)
    return refused.value.error.code


def test_each_action_parses_to_its_request():
    assert parse({"action": "subscribe", "types": ["risk.alert"], "id": "r1"}) == protocol.Subscribe(
        frozenset({"risk.alert"}), "r1"
    )
    assert parse({"action": "unsubscribe", "types": ["risk.alert"]}) == protocol.Unsubscribe(
        frozenset({"risk.alert"})
    )
    assert parse({"action": "ping"}) == protocol.Ping()
    token = cursors.encode({"market": 3})
    assert parse({"action": "replay", "cursor": token}) == protocol.Replay(token, None, None, 100)
    assert parse({"action": "replay", "last": 20, "types": ["signal.created"]}) == protocol.Replay(
        None, 20, frozenset({"signal.created"}), 100
    )


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", "malformed_json"),
        ('"ping"', "invalid_message"),
        ({"types": ["risk.alert"]}, "unknown_action"),
        ({"action": "publish"}, "unknown_action"),
        ({"action": "ping", "extra": 1}, "invalid_message"),
        ({"action": "ping", "id": 7}, "invalid_message"),
        ({"action": "ping", "id": "x" * 65}, "invalid_message"),
        ({"action": "subscribe"}, "invalid_message"),
        ({"action": "subscribe", "types": []}, "invalid_message"),
        ({"action": "subscribe", "types": "risk.alert"}, "invalid_message"),
        ({"action": "subscribe", "types": ["order.filled"]}, "unknown_type"),
        ({"action": "replay"}, "invalid_message"),
        ({"action": "replay", "cursor": "c1.x", "last": 5}, "invalid_message"),
        ({"action": "replay", "cursor": "forged"}, "invalid_cursor"),
        ({"action": "replay", "cursor": 5}, "invalid_cursor"),
        ({"action": "replay", "last": 0}, "invalid_message"),
        ({"action": "replay", "last": 1001}, "invalid_message"),
        ({"action": "replay", "last": True}, "invalid_message"),
        ({"action": "replay", "last": 5, "limit": "all"}, "invalid_message"),
        ({"action": "replay", "last": 5, "limit": 5}, "invalid_message"),  # limit goes with a cursor
    ],
)
def test_bad_messages_are_refused_with_their_code(message, code):
    assert refusal(message) == code


def test_oversized_messages_are_refused_before_parsing():
    message = json.dumps({"action": "ping", "id": "x" * protocol.MAX_INBOUND_BYTES})
    assert refusal(message) == "message_too_large"


def test_unknown_action_lists_the_valid_ones():
    with pytest.raises(StreamingError) as refused:
        parse({"action": "hello"})
    assert all(action in refused.value.message for action in protocol.ACTIONS)


def test_answers_echo_the_request_id_and_carry_what_a_client_needs():
    assert protocol.subscribed({"risk.alert"}, {"system.status"}, {}, "r1") == {
        "type": "subscribed",
        "id": "r1",
        "types": ["risk.alert"],
        "denied": ["system.status"],
        "cursor": cursors.encode({}),
    }
    pong = protocol.pong({"market": 4}, None)
    assert (pong["type"], pong["heads"], "id" in pong) == ("pong", {"market": 4}, False)
    assert pong["server_time"].endswith("Z")
    envelope = Envelope(
        "0192f1c4-8d2e-7a51-9c3b-000000000001",
        "signal.created",
        "market",
        4,
        2,
        "2026-11-27T08:00:00.000Z",
        1,
        {"x": 1},
        "p",
        type_heads={"signal.created": 4},
    )
    page = protocol.replayed(Page([envelope], {"market": 4}, more=True), "r2")
    assert (page["id"], page["more"], page["count"]) == ("r2", True, 1)
    assert cursors.decode(page["cursor"]) == {"market": 4}
    answer = protocol.subscribed({"signal.created"}, {"risk.alert"}, {"market": 3, "ops": 0}, None)
    assert (answer["types"], answer["denied"]) == (["signal.created"], ["risk.alert"])
    assert cursors.decode(answer["cursor"]) == {"market": 3, "ops": 0}
    welcome = protocol.welcome("Zx1=", "viewer", {"signal.created"}, {"market": 4}, 1795770000)
    assert welcome["allowed_types"] == ["signal.created"] and welcome["heads"] == {"market": 4}


def test_errors_carry_the_code_and_the_request_id():
    failure = StreamingError(ErrorCode.RATE_LIMITED, "slow down")
    assert protocol.error(failure, "r9") == {
        "type": "error",
        "id": "r9",
        "code": "rate_limited",
        "message": "slow down",
    }
