"""The resume rule of docs/protocol.md as a property: whatever types a subscriber takes of a stream,
however the live events arrive (out of order, some lost), wherever the connection is cut, and whichever
transport it resumes on, an application that follows the rule gets every event of its types exactly
once and in seq order.

The rule, per stream: position `p` (the last seq processed); an event with `seq <= p` is a repeat;
one with `prev <= p` is next; one with `prev > p` waits for what is missing, and a replay from `p`
brings that."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from stacks.config import load
from stacks.table_layouts import EVENTS, create_table
from streaming import codec
from streaming import cursor as cursors
from streaming.events import Envelope
from streaming.publish import Publisher
from streaming.replay import replay_after
from streaming.sse_plan import StreamPlan
from streaming.store import EventStore
from streaming.subscription import Subscription
from streaming.tail import Tailer
from tests.conftest import REGION, example
from tests.resume import Application

pytestmark = [pytest.mark.reconnect, pytest.mark.events]
MARKET = ["signal.created", "proposal.created", "proposal.updated", "decision.made"]
ROLE = "analyst"  # sees all four
_tables = itertools.count()


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("dynamodb", region_name=REGION)


def fresh_store(dynamodb: Any) -> tuple[EventStore, Publisher, Any]:
    runtime = load("dev").runtime_settings(f"events-{next(_tables)}")
    create_table(dynamodb, runtime.events_table, EVENTS)
    store = EventStore(dynamodb, runtime.events_table, runtime.streams_by_type, runtime.replay_window_seconds)
    return store, Publisher(runtime, store), runtime


def delivered(events: list[Envelope], types: frozenset[str]) -> list[dict[str, Any]]:
    """Each event as the WebSocket fan-out sends it to a subscriber to `types`, one message each."""
    return [e for frame in codec.event_frames(events, types, 10**9) for e in json.loads(frame)["events"]]


def resume_over_websocket(app: Application, store: EventStore, runtime: Any, types: frozenset[str]) -> None:
    """`replay` from the application's position, following `more`, as the session serves it."""
    cursor = app.cursor
    while True:
        page = replay_after(store, runtime.roles, ROLE, cursor, types, limit=3)
        for event in delivered(page.events, types):
            app.receive(event)
        if not page.more:
            return
        cursor = cursors.encode(page.cursor)


def resume_over_sse(app: Application, store: EventStore, runtime: Any, types: frozenset[str]) -> None:
    """Open SSE streams from the application's position until it has caught up with the heads."""

    async def one_stream() -> None:
        plan = StreamPlan(
            role=ROLE,
            types=types,
            streams=frozenset({"market"}),
            position=dict(app.position),
            heartbeat_seconds=60,
            stall_seconds=30,
            max_stream_seconds=0.05,  # short: resuming again after a planned end is part of the test
            retry_ms=0,
            compress_above=10**9,
        )
        tailer = Tailer(store, runtime.streams_by_type, interval=0.01)
        async for chunk in Subscription(store, tailer, plan):
            fields = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n") if ": " in line)
            if fields.get("event") in types:
                app.receive(json.loads(fields["data"]))

    head = store.heads()["market"]
    last_of_types = max((e.seq for e in store.after({}, types, 1000).events), default=0)
    for _ in range(50):
        if app.position.get("market", 0) >= last_of_types or head == 0:
            return
        asyncio.run(one_stream())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kinds=st.lists(st.sampled_from(MARKET), min_size=1, max_size=30),
    subscribed=st.sets(st.sampled_from(MARKET), min_size=1),
    data=st.data(),
    transport=st.sampled_from(["websocket", "sse"]),
)
def test_no_loss_and_no_repeat_at_the_application_wherever_the_cut(
    dynamodb, kinds, subscribed, data, transport
):
    store, publisher, runtime = fresh_store(dynamodb)
    stored = [r.envelope for r in publisher.publish([example(k, runtime) for k in kinds], "tests")]
    types = frozenset(subscribed)
    live = delivered([e for e in stored if e is not None and e.type in types], types)
    arrivals = data.draw(st.permutations(live), label="arrival order")
    lost = data.draw(
        st.sets(st.sampled_from(range(len(arrivals))) if arrivals else st.nothing()), label="lost"
    )
    cut = data.draw(st.integers(0, len(arrivals)), label="cut after")

    app = Application()
    for index, event in enumerate(arrivals[:cut]):
        if index not in lost:
            app.receive(event)
    app.cut()
    (resume_over_websocket if transport == "websocket" else resume_over_sse)(app, store, runtime, types)

    expected = [e.seq for e in stored if e is not None and e.type in types]
    assert [e["seq"] for e in app.processed] == expected
    assert not app.held
