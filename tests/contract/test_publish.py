"""The publish API's contract (docs/publishing.md): an event id is stored once however often it is
sent, and GET /streams names each stream's head."""

from __future__ import annotations

import pytest

from tests.conftest import signal
from tests.contract.target import Target

pytestmark = [pytest.mark.contract, pytest.mark.events, pytest.mark.xdist_group("local-stack")]


def test_an_event_published_twice_is_stored_once_with_one_seq(target: Target):
    event = signal()
    first = target.publisher.publish(event)
    again = target.publisher.publish(event)
    assert (first["id"], first["duplicate"]) == (event["id"], False)
    assert (again["id"], again["seq"], again["duplicate"]) == (event["id"], first["seq"], True)


def test_streams_names_each_stream_s_head_and_a_publish_moves_it(target: Target):
    before = target.publisher.streams()["streams"]
    result = target.publisher.publish(signal())
    after = target.publisher.streams()["streams"]
    assert result["stream"] == "market"
    assert after["market"] >= result["seq"] > before.get("market", 0)
