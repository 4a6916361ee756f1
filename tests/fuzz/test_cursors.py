"""Any cursor or Last-Event-ID, and any WebSocket message text: decoded into a position the service
could have issued, or refused with its documented code. Pure computation, so these take the most
examples; the session and the handlers are fuzzed end to end in their own modules."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streaming import cursor as cursors
from streaming import protocol
from streaming.errors import StreamingError
from tests.fuzz.inputs import assert_refused, documents, fuzzed, json_values
from tests.fuzz.test_websocket import messages

pytestmark = pytest.mark.fuzz
KNOWN_TYPES = ["signal.created", "risk.alert", "system.status", "decision.made"]


def encoded(value: object) -> str:
    return "c1." + base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


positions = st.dictionaries(
    st.sampled_from(["market", "risk", "ops"]) | st.text(max_size=12),
    st.integers(min_value=-5, max_value=2**70) | json_values,
    max_size=4,
)
cursor_texts = st.one_of(
    st.text(max_size=80),
    st.text(max_size=80).map(lambda t: "c1." + t),
    st.binary(max_size=60).map(lambda b: "c1." + base64.urlsafe_b64encode(b).decode()),
    json_values.map(encoded),
    positions.map(encoded),
    st.integers(min_value=1000, max_value=5000).map(lambda n: "c1." + "A" * n),  # over the length limit
)


@fuzzed(3)
@given(token=cursor_texts)
def test_a_cursor_is_a_position_the_service_could_issue_or_invalid_cursor(inputs, token):
    inputs.tried("cursor")
    try:
        position = cursors.decode(token)
    except StreamingError as refused:
        assert assert_refused(refused.to_body()["error"], refused.status) == "invalid_cursor"
    else:
        assert all(isinstance(seq, int) and seq >= 0 for seq in position.values())
        assert cursors.decode(cursors.encode(position)) == position


@fuzzed(3)
@given(message=documents(messages))
def test_a_websocket_message_is_a_request_or_refused_with_its_code(inputs, message):
    inputs.tried("websocket message parse")
    try:
        request = protocol.parse(message, KNOWN_TYPES)
    except StreamingError as refused:
        assert_refused(refused.to_body()["error"], refused.status)
    else:
        assert isinstance(request, protocol.Request)
    request_id = protocol.request_id_of(message)
    assert request_id is None or 0 < len(request_id) <= 64
