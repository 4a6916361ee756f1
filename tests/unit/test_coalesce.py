"""The coalescing rule (streaming.coalesce) on its own: what is left out, what stands for it, and that
the resume rule of docs/protocol.md (clients/ordering.py) sees no gap in what is sent, whatever the
subscriber's types and whichever part of the history one delivery carries."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.ordering import Ordering
from streaming import codec
from streaming.coalesce import Coalescing, coalesce
from streaming.events import Envelope
from streaming.sse_plan import StreamPlan
from streaming.subscription import Subscription
from streaming.tail import Tailer
from tests.conftest import example, signal

pytestmark = pytest.mark.degradation
STREAM_OF = {
    "proposal.updated": "market",
    "signal.created": "market",
    "decision.made": "market",
    "risk.alert": "risk",
    "system.status": "ops",
}
COALESCIBLE = frozenset({"proposal.updated", "system.status"})
KEYS = [None, "p-1", "p-2", "p-3"]


def history(specs: list[tuple[str, str | None]]) -> list[Envelope]:
    """Events as the store commits them: per stream gap-free seqs, `prev` per type, the type heads."""
    heads: dict[str, dict[str, int]] = {}
    events = []
    for n, (event_type, key) in enumerate(specs, 1):
        stream = STREAM_OF[event_type]
        stream_heads = heads.setdefault(stream, {})
        seq = max(stream_heads.values(), default=0) + 1
        prev = stream_heads.get(event_type, 0)
        stream_heads[event_type] = seq
        events.append(
            Envelope(
                id=f"0192f1c4-8d2e-7a51-9c3b-{n:012d}",
                type=event_type,
                stream=stream,
                seq=seq,
                prev=prev,
                ts=f"2026-11-27T08:00:00.{n % 1000:03d}Z",
                schema_version=1,
                data={"n": n},
                producer="tests",
                key=key,
                type_heads=dict(stream_heads),
            )
        )
    return events


def as_sent(events: list[Envelope], types: frozenset[str]) -> list[dict]:
    """As the client reads them off the wire (the WebSocket fan-out's frames)."""
    return [e for frame in codec.event_frames(events, types, 10**9) for e in json.loads(frame)["events"]]


def test_superseded_updates_go_as_the_latest_which_counts_them_and_keeps_the_chain():
    events = history(
        [
            ("proposal.updated", "p-1"),  # 1: superseded by 3, then 5
            ("proposal.updated", "p-2"),  # 2
            ("proposal.updated", "p-1"),  # 3: superseded by 5
            ("signal.created", None),  # 4
            ("proposal.updated", "p-1"),  # 5
        ]
    )
    types = frozenset({"proposal.updated", "signal.created"})
    result = coalesce(events, types, COALESCIBLE)
    sent = as_sent(result.events, types)
    assert [(e["seq"], e["prev"], e.get("coalesced")) for e in sent] == [
        (2, 0, None),
        (4, 2, None),
        (5, 4, 2),
    ]
    assert result.left_out == Counter({"proposal.updated": 2})


def test_must_deliver_keyless_and_other_types_are_always_sent():
    events = history(
        [
            ("risk.alert", "book-1"),
            ("risk.alert", "book-1"),
            ("proposal.updated", None),
            ("proposal.updated", None),
            ("decision.made", "p-1"),
            ("decision.made", "p-1"),
        ]
    )
    types = frozenset(STREAM_OF)
    assert coalesce(events, types, COALESCIBLE).events == events


def test_an_event_whose_successor_is_in_another_delivery_is_sent():
    # seq 2 (another publish's) follows seq 1: leaving 1 out would show the client a gap at 2.
    events = history([("proposal.updated", "p-1"), ("signal.created", None), ("proposal.updated", "p-1")])
    types = frozenset({"proposal.updated", "signal.created"})
    this_delivery = [events[0], events[2]]
    assert coalesce(this_delivery, types, COALESCIBLE).events == this_delivery


def test_the_overload_signal_is_more_events_than_the_threshold():
    policy = Coalescing(COALESCIBLE, above_events=3)
    assert not policy.overloaded(3)
    assert policy.overloaded(4)


def test_coalescing_twice_keeps_the_count():
    events = history([("proposal.updated", "p-1")] * 4)
    types = frozenset({"proposal.updated"})
    once = coalesce(events[:3], types, COALESCIBLE).events + events[3:]
    twice = coalesce(once, types, COALESCIBLE)
    assert [(e.seq, e.coalesced) for e in twice.events] == [(4, 3)]


specs = st.lists(st.tuples(st.sampled_from(sorted(STREAM_OF)), st.sampled_from(KEYS)), max_size=40)
subscriber_types = st.sets(st.sampled_from(sorted(STREAM_OF)), min_size=1).map(frozenset)


@settings(max_examples=300, deadline=None)
@given(specs, subscriber_types, st.data())
def test_a_client_sees_no_gap_and_ends_with_every_latest_state(specs, types, data):
    """One delivery carries any part of the history (other publishes deliver the rest as they are, in
    any order): the client holds nothing at the end (no replay needed), gets every event that is not
    coalescible, keyless or superseded, the latest of every key, and counts exactly what was left out."""
    mine = [e for e in history(specs) if e.type in types]
    in_delivery = data.draw(st.lists(st.booleans(), min_size=len(mine), max_size=len(mine)))
    delivery = [e for e, taken in zip(mine, in_delivery, strict=True) if taken]
    others = [e for e, taken in zip(mine, in_delivery, strict=True) if not taken]
    result = coalesce(delivery, types, COALESCIBLE)
    arrivals = as_sent(result.events, types) + as_sent(others, types)
    arrivals = data.draw(st.permutations(arrivals))

    client = Ordering()
    processed = [event for arrival in arrivals for event in client.offer(arrival)]

    assert client.held == 0
    left_out = {(e.stream, e.seq) for e in delivery} - {(e["stream"], e["seq"]) for e in processed}
    assert sum(result.left_out.values()) == len(left_out)
    assert sum(e.get("coalesced", 0) for e in processed) == len(left_out)
    for event in mine:
        if (event.stream, event.seq) in left_out:
            assert event.type in COALESCIBLE and event.key is not None
            assert any(
                e["type"] == event.type and e.get("key") == event.key and e["seq"] > event.seq
                for e in processed
            )
    latest = {(e.type, e.key): e.seq for e in mine}
    assert latest.items() <= {(e["type"], e.get("key")): e["seq"] for e in processed}.items()


@settings(max_examples=200, deadline=None)
@given(specs, subscriber_types)
def test_a_whole_delivery_in_order_is_never_held(specs, types):
    """The live case: the events arrive in the order sent; each is next by the rule when it comes."""
    mine = [e for e in history(specs) if e.type in types]
    client = Ordering()
    for event in as_sent(coalesce(mine, types, COALESCIBLE).events, types):
        assert client.offer(event) == [event]


# -- Over SSE: live events piled up behind a client are coalesced; catching up from the store is not --

SSE_TYPES = frozenset({"proposal.updated", "risk.alert", "signal.created"})
STREAMS = frozenset({"market", "risk"})


async def sse_events(store, tailer, coalescing, position) -> list[dict]:
    """Every event one short SSE stream writes, from `position`, with `coalescing`."""
    plan = StreamPlan(
        role="approver",
        types=SSE_TYPES,
        streams=STREAMS,
        position=position,
        heartbeat_seconds=60,
        stall_seconds=30,
        max_stream_seconds=0.5,  # it ends by itself
        retry_ms=0,
        compress_above=10**9,
    )
    written = []
    async for chunk in Subscription(store, tailer, plan, coalescing=coalescing):
        fields = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n") if ": " in line)
        if fields.get("event") in SSE_TYPES:
            written.append(json.loads(fields["data"]))
    return written


def burst(settings) -> list[dict]:
    """Keyed updates of three proposals (20), a risk alert and a signal among them."""
    updates = [{**example("proposal.updated", settings), "key": f"p-{n % 3}"} for n in range(20)]
    return [*updates[:10], example("risk.alert", settings), signal(), *updates[10:]]


def test_an_sse_client_behind_a_burst_gets_it_coalesced_and_a_catch_up_from_the_store_is_whole(
    store, publisher, settings, capsys
):
    policy = Coalescing(COALESCIBLE, above_events=5)

    async def run() -> tuple[list[dict], list[dict]]:
        tailer = Tailer(store, settings.streams_by_type, interval=0.01)
        await tailer.watch(STREAMS)  # live from here
        start = {stream: store.heads().get(stream, 0) for stream in STREAMS}
        await asyncio.to_thread(publisher.publish, burst(settings), "tests")
        published = {stream: store.heads().get(stream, 0) for stream in STREAMS}
        async with asyncio.timeout(60):  # the burst waits in memory for the client
            while await tailer.heads(STREAMS) != published:
                await asyncio.sleep(0.01)
        live = await sse_events(store, tailer, policy, start)
        # A new process's tailer remembers nothing before its start: this stream catches up from the store.
        behind = await sse_events(store, Tailer(store, settings.streams_by_type, interval=0.01), policy, {})
        return live, behind

    live, behind = asyncio.run(run())
    stored = store.after({}, SSE_TYPES, 1000).events
    client = Ordering()
    assert [e for event in live for e in client.offer(event)] == live  # each next when it came
    updates = [e for e in live if e["type"] == "proposal.updated"]
    assert [(e["key"], e["coalesced"]) for e in updates] == [("p-2", 5), ("p-0", 6), ("p-1", 6)]
    counted = [  # the metric, as EMF: what was left out, by transport and type
        (document["transport"], document["type"], document["EventsCoalesced"])
        for document in map(json.loads, capsys.readouterr().out.splitlines())
        if "EventsCoalesced" in document
    ]
    assert counted == [("sse", "proposal.updated", [17.0])]
    assert sorted(e["type"] for e in live if e["type"] != "proposal.updated") == [
        "risk.alert",
        "signal.created",
    ]
    assert [(e["stream"], e["seq"]) for e in behind] == [(e.stream, e.seq) for e in stored]  # all 22
    assert not any("coalesced" in e for e in behind)
