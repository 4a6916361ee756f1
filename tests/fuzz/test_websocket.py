"""Any WebSocket message, from a nearly right one to random bytes: the session answers each with a
documented error or a success, never internal_error, never lets an exception escape, and a refused
message leaves the connection's subscriptions as they were."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming import cursor as cursors
from streaming.ratelimit import TokenBucket
from streaming.session import Session
from tests.conftest import example, signal
from tests.fuzz.inputs import assert_refused, documents, fuzzed, json_values

pytestmark = pytest.mark.fuzz
UNLIMITED = TokenBucket(rate=1e9, burst=10**9)  # the rate limit is not what is fuzzed here
TYPES = ["signal.created", "risk.alert", "system.status", "decision.made", "order.filled", "", "*"]
ANSWERS = {"subscribed", "unsubscribed", "pong", "replay", "events", "error"}


class RecordingManagement:
    """The @connections API: keeps what the session posts, decoded; closing is not expected."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.deletes: list[str] = []

    def post(self, connection_id: str, data: bytes) -> int:
        self.posts.append(json.loads(data))
        return 200

    def delete(self, connection_id: str) -> int:
        self.deletes.append(connection_id)
        return 204


type_lists = st.lists(st.sampled_from(TYPES) | st.text(max_size=20), max_size=6)
ISSUED = [cursors.encode({"market": 1}), cursors.encode({"risk": 9})]
cursor_values = st.sampled_from(["", "c1.", "c1.e30", *ISSUED])
field_values = {
    "id": st.text(max_size=80) | json_values,
    "types": type_lists | json_values,
    "cursor": cursor_values | st.text(max_size=40).map(lambda t: "c1." + t) | json_values,
    "last": st.integers(min_value=-(2**70), max_value=2**70) | json_values,
    "limit": st.integers(min_value=-(2**70), max_value=2**70) | json_values,
}
messages = st.fixed_dictionaries(
    {"action": st.sampled_from(["subscribe", "unsubscribe", "ping", "replay"]) | json_values},
    optional={**field_values, "extra": json_values},
)


@pytest.fixture
def connection(registry, store, settings, publisher, clock):
    """An analyst's greeted connection on a store with a few events, and what it posts to."""
    publisher.publish([signal(), signal(), example("decision.made", settings)], "fuzz")
    management = RecordingManagement()
    session = Session(registry, store, settings.roles, settings.catalog.types, management, UNLIMITED, 8192)
    session.connect("C1", {"sub": "fuzz", "role": "analyst", "exp": int(clock.now) + 10**6})
    session.receive("C1", json.dumps({"action": "subscribe", "types": ["signal.created"]}))
    management.posts.clear()
    return session, management


@fuzzed(0.25)  # four moto calls an input
@given(message=documents(messages))
def test_every_message_gets_a_documented_answer_and_a_refusal_changes_nothing(
    connection, registry, inputs, message
):
    session, management = connection
    inputs.tried("websocket message")
    before = registry.get("C1")
    session.receive("C1", message)
    answers, management.posts[:] = list(management.posts), []
    assert answers and answers[-1]["type"] in ANSWERS
    assert management.deletes == []
    if answers[-1]["type"] == "error":
        assert_refused(answers[-1])
        assert registry.get("C1") == before
