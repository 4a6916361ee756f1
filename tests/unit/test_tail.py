"""SSE subscriptions on moto: ids that resume, role and type filtering, heartbeats, the planned end,
and one shared tailer reading new events once for every subscription."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import pytest

from streaming import cursor as cursors
from streaming.sse_plan import StreamPlan
from streaming.subscription import Subscription
from streaming.tail import Tailer
from tests.conftest import example, signal

pytestmark = pytest.mark.events


def parse(raw: bytes) -> list[dict[str, Any]]:
    """Messages of an SSE body: fields per message; comment lines as {"comment": text}."""
    messages = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields["comment" if name == "" else name] = value
        messages.append(fields)
    return messages


def plan(
    settings, position, *, role="admin", types=None, seconds=0.5, heartbeat=60.0, stall=30.0
) -> StreamPlan:
    visible = settings.roles.visible(role, types)
    return StreamPlan(
        role=role,
        types=visible,
        streams=frozenset(settings.streams_by_type[t] for t in visible),
        position=dict(position),
        heartbeat_seconds=heartbeat,
        stall_seconds=stall,
        max_stream_seconds=seconds,
        retry_ms=1500,
        compress_above=8192,
    )


async def collect(store, tailer, stream_plan) -> list[dict[str, Any]]:
    chunks: list[bytes] = []
    await _drain(Subscription(store, tailer, stream_plan), chunks)
    return parse(b"".join(chunks))


async def until(condition, what: str, seconds: float = 30) -> None:
    """Wait for `condition`, however loaded the machine; fail after a generous `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.02)


async def _drain(body, chunks) -> None:
    async for chunk in body:
        chunks.append(chunk)


def run(coroutine):
    return asyncio.run(coroutine)


def test_replay_then_end_each_event_id_resuming_exactly_after_it(store, publisher, settings):
    published = publisher.publish([signal() for _ in range(3)], "tests")
    tailer = Tailer(store, settings.streams_by_type, interval=0.05)
    messages = run(collect(store, tailer, plan(settings, {})))
    comment, first, *events, end = messages
    assert comment == {"comment": "heartbeat"}
    assert (first["event"], first["retry"]) == ("heartbeat", "1500")
    assert [m["event"] for m in events] == ["signal.created"] * 3
    assert [json.loads(m["data"])["id"] for m in events] == [r.id for r in published]
    for message in events:
        seq = json.loads(message["data"])["seq"]
        assert cursors.decode(message["id"])["market"] == seq
    assert (end["event"], end["retry"]) == ("end", "1500")
    assert json.loads(end["data"]) == {"reconnect": True, "reason": "planned"}
    assert cursors.decode(end["id"])["market"] == 3
    again = run(
        collect(
            store,
            Tailer(store, settings.streams_by_type, 0.05),
            plan(settings, cursors.decode(events[1]["id"])),
        )
    )
    assert [json.loads(m["data"])["seq"] for m in again if m.get("event") == "signal.created"] == [3]


def test_a_viewer_gets_only_what_its_role_may_see_of_what_it_asked(store, publisher, settings):
    publisher.publish([example(t, settings) for t in sorted(settings.streams_by_type)], "tests")
    tailer = Tailer(store, settings.streams_by_type, interval=0.05)
    messages = run(
        collect(store, tailer, plan(settings, {}, role="viewer", types=["signal.created", "risk.alert"]))
    )
    assert [m.get("event") for m in messages if m.get("event") not in ("heartbeat", "end", None)] == [
        "signal.created"
    ]


def test_live_events_come_from_one_shared_read_for_every_subscription(store, publisher, settings):
    async def scenario():
        tailer = Tailer(store, settings.streams_by_type, interval=0.05)
        # Not started yet: every subscription starts it at once, and one poller must result.
        stream_plan = plan(settings, store.heads(), seconds=60)
        later = [signal() for _ in range(2)]
        streams = [[] for _ in range(5)]
        tasks = [asyncio.ensure_future(_drain(Subscription(store, tailer, stream_plan), c)) for c in streams]
        await until(lambda: all(_heartbeats(chunks) for chunks in streams), "every stream open")
        await asyncio.to_thread(publisher.publish, later, "tests")
        await until(lambda: all(len(_ids(chunks)) >= len(later) for chunks in streams), "the live events")
        for task in tasks:
            task.cancel()
        return [_ids(chunks) for chunks in streams], tailer, later

    results, tailer, later = run(scenario())
    for live in results:
        assert live == [event["id"] for event in later]
    assert tailer.event_reads <= 2  # one read per head change, not one per subscription


def test_heartbeats_carry_server_time_heads_and_the_cursor_so_far(store, publisher, settings):
    publisher.publish([signal()], "tests")

    async def scenario() -> list[dict[str, Any]]:
        tailer = Tailer(store, settings.streams_by_type, interval=0.05)
        chunks: list[bytes] = []
        stream = asyncio.ensure_future(
            _drain(Subscription(store, tailer, plan(settings, {}, seconds=60, heartbeat=0.2)), chunks)
        )
        await until(lambda: _heartbeats(chunks) >= 3, "three heartbeats")
        stream.cancel()
        return parse(b"".join(chunks))

    messages = run(scenario())
    beats = [m for m in messages if m.get("event") == "heartbeat"]
    assert len(beats) >= 3
    assert any(m.get("comment") == "heartbeat" for m in messages)
    body = json.loads(beats[-1]["data"])
    assert body["heads"]["market"] == 1 and body["server_time"].endswith("Z")
    assert cursors.decode(beats[-1]["id"])["market"] == 1


def test_memory_that_dropped_events_while_reading_never_serves_a_gap(store, publisher, settings, monkeypatch):
    import streaming.tail as tail

    monkeypatch.setattr(tail, "KEEP_PER_STREAM", 5)
    monkeypatch.setattr(tail, "PAGE_SIZE", 2)
    seen_mid_read: list[Any] = []

    class Observed:
        """The store, and what a subscriber at the start would be served between two page reads."""

        def __init__(self, tailer_of: dict[str, Tailer], start: dict[str, int]) -> None:
            self.tailer_of, self.start = tailer_of, start

        def heads(self, *args: Any) -> dict[str, int]:
            return store.heads(*args)

        def after(self, *args: Any) -> Any:
            seen_mid_read.append(
                self.tailer_of["it"].recent_after(self.start, frozenset({"signal.created"}), ["market"])
            )
            return store.after(*args)

    async def scenario():
        holder: dict[str, Tailer] = {}
        start = store.heads()
        observed = Observed(holder, start)
        tailer = holder["it"] = Tailer(observed, settings.streams_by_type, interval=3600)  # type: ignore[arg-type]
        await tailer.watch(frozenset({"market"}))
        await tailer.heads()
        publisher.publish([signal() for _ in range(8)], "tests")  # read in 4 pages of 2; keeps 5
        await tailer._refresh_heads()
        return tailer.recent_after(start, frozenset({"signal.created"}), ["market"])

    assert run(scenario()) is None  # memory no longer reaches back: the subscriber reads the store
    for served in seen_mid_read:  # and never, between pages, a memory with a hole in it
        assert served is None or [e.seq for e in served[0]] == list(range(1, len(served[0]) + 1))


def test_the_tailer_reads_only_the_heads_its_subscriptions_need(store, settings):
    reads: list[Any] = []
    original = store.heads

    def counted(types: Any = None) -> dict[str, int]:
        reads.append(sorted(types) if types is not None else None)
        return original(types)

    store.heads = counted  # type: ignore[method-assign]

    async def scenario() -> dict[str, int]:
        tailer = Tailer(store, settings.streams_by_type, interval=3600)
        await tailer.watch(frozenset({"market"}))
        return await tailer.heads()

    assert run(scenario()) == {"market": 0}
    assert reads and all(
        types and {settings.streams_by_type[t] for t in types} == {"market"} for types in reads
    )


def test_streams_cancelled_at_any_moment_never_silence_the_others(store, publisher, settings):
    """Clients leave at random moments; Starlette then cancels their streams through an anyio cancel
    scope, which re-delivers the cancellation until the stream has ended. The streams that stay
    must keep getting every event and heartbeat."""
    import random

    import anyio

    rng = random.Random(14)
    published: list[str] = []

    async def leaver(stream_plan) -> None:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(_drain, Subscription(store, tailer, stream_plan), [])
                await anyio.sleep(rng.uniform(0.0, 0.2))
                scope.cancel()

    async def scenario():
        nonlocal tailer
        tailer = Tailer(store, settings.streams_by_type, interval=0.01)
        start = store.heads()
        stayers = [[] for _ in range(3)]
        staying = [
            asyncio.ensure_future(
                _drain(Subscription(store, tailer, plan(settings, start, seconds=60, heartbeat=0.2)), chunks)
            )
            for chunks in stayers
        ]
        hung = 0
        for _ in range(40):
            leavers = [
                asyncio.ensure_future(
                    leaver(plan(settings, start, seconds=60, heartbeat=0.01 * rng.randint(1, 5)))
                )
                for _ in range(6)
            ]
            await asyncio.to_thread(
                lambda: published.extend(r.id for r in publisher.publish([signal()], "tests"))
            )
            _, pending = await asyncio.wait(leavers, timeout=30)
            hung += len(pending)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            received = [_ids(chunks) for chunks in stayers]
            if all(ids == published for ids in received):
                break
            await asyncio.sleep(0.05)
        beats = [_heartbeats(chunks) for chunks in stayers]
        deadline = time.monotonic() + 30  # heartbeats keep coming after the storm
        while time.monotonic() < deadline and any(
            _heartbeats(chunks) <= before for chunks, before in zip(stayers, beats, strict=True)
        ):
            await asyncio.sleep(0.05)
        beats_after = [_heartbeats(chunks) for chunks in stayers]
        ended = [[m["data"] for m in parse(b"".join(c)) if m.get("event") == "end"] for c in stayers]
        for task in staying:
            task.cancel()
        return received, beats, beats_after, hung, ended

    tailer: Tailer
    received, beats, beats_after, hung, ended = run(scenario())
    assert hung == 0  # a cancelled stream ends
    # On a failure, say which events are missing, where in the run, and whether a stream ended early.
    missing = [[published.index(i) for i in published if i not in ids] for ids in received]
    assert all(ids == published for ids in received), (
        [len(ids) for ids in received],
        missing,
        ended,
        tailer.restarts,
    )
    assert all(after > before for before, after in zip(beats, beats_after, strict=True))


def _heartbeats(chunks: list[bytes]) -> int:
    return sum(1 for m in parse(b"".join(chunks)) if m.get("event") == "heartbeat")


def _ids(chunks: list[bytes]) -> list[str]:
    return [
        json.loads(m["data"])["id"] for m in parse(b"".join(chunks)) if m.get("event") == "signal.created"
    ]


def test_a_stream_that_cannot_write_ends_itself_and_the_tailer_starts_over(store, publisher, settings):
    """The store stops answering the tailer: the stream ends with reason `stalled` (the client
    reconnects) within its stall bound, and the tailer restarts; once the store answers again, a new
    stream on the same tailer gets live events."""
    hanging = HangingHeads(store, reads_before_hanging=0)

    async def scenario():
        tailer = Tailer(hanging, settings.streams_by_type, interval=0.02)  # type: ignore[arg-type]
        stream_plan = plan(settings, store.heads(), seconds=60, heartbeat=0.1, stall=0.5)
        stalled = await collect(store, tailer, stream_plan)
        restarts = tailer.restarts
        hanging.thaw()
        later, chunks = signal(), []
        again = asyncio.ensure_future(
            _drain(Subscription(store, tailer, plan(settings, store.heads(), seconds=60)), chunks)
        )
        await asyncio.to_thread(publisher.publish, [later], "tests")
        deadline = time.monotonic() + 30
        while not _ids(chunks) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        again.cancel()
        return stalled, restarts, _ids(chunks), later["id"]

    stalled, restarts, again, later_id = run(scenario())
    assert json.loads(stalled[-1]["data"]) == {"reconnect": True, "reason": "stalled"}
    assert "retry" in stalled[-1]
    assert restarts == 1
    assert again == [later_id]


def test_a_poller_that_stopped_is_started_again(store, settings):
    async def scenario() -> tuple[dict[str, int], bool]:
        tailer = Tailer(store, settings.streams_by_type, interval=0.02)
        await tailer.watch(frozenset({"market"}))
        assert tailer._poller is not None
        stopped = tailer._poller
        stopped.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopped  # stopped for sure, not merely asked to stop
        async with asyncio.timeout(30):
            heads = await tailer.heads(frozenset({"market"}))
        started_again = tailer._poller is not stopped and not tailer._poller.done()
        return heads, started_again

    assert run(scenario()) == ({"market": 0}, True)


def test_heads_that_stopped_moving_because_reads_hang_end_the_streams_once_restarted(store, settings):
    """The store hangs after the first read: heartbeats would go on with heads that no longer move
    and pass for "nothing new". The streams end as stalled instead, and the two that stalled together
    restart the tailer once."""
    hanging = HangingHeads(store, reads_before_hanging=1)

    async def scenario():
        tailer = Tailer(hanging, settings.streams_by_type, interval=0.02)  # type: ignore[arg-type]
        stream_plan = plan(settings, store.heads(), seconds=30, heartbeat=0.2, stall=2.0)
        ended = await asyncio.gather(collect(store, tailer, stream_plan), collect(store, tailer, stream_plan))
        hanging.thaw()
        return ended, tailer.restarts

    ended, restarts = run(scenario())
    for messages in ended:
        assert json.loads(messages[-1]["data"])["reason"] == "stalled"
    assert restarts == 1


class HangingHeads:
    """The store, whose heads reads hang (until thawed) after the first few."""

    def __init__(self, store: Any, reads_before_hanging: int) -> None:
        import threading

        self._store, self._left, self._thawed = store, reads_before_hanging, threading.Event()

    def heads(self, *args: Any) -> dict[str, int]:
        self._left -= 1
        if self._left < 0:
            self._thawed.wait(30)
        return self._store.heads(*args)  # type: ignore[no-any-return]

    def after(self, *args: Any) -> Any:
        return self._store.after(*args)

    def thaw(self) -> None:
        self._left = 10**9
        self._thawed.set()


def test_a_subscription_says_how_it_ended(store, publisher, settings):
    """Planned (its end event written), stalled (the same, after writing nothing for too long),
    client left (stopped from outside before its end), failed (a failure escaped it)."""
    from streaming.subscription import Ending

    publisher.publish([signal()], "tests")

    class Broken:
        def heads(self, *args: Any) -> dict[str, int]:
            return store.heads(*args)

        def after(self, *args: Any) -> Any:
            raise ConnectionError("the table is gone")

    async def to_the_end(subscription: Subscription) -> Ending:
        with contextlib.suppress(ConnectionError):
            async for _ in subscription:
                pass
        return subscription.ending

    async def left_after_one_chunk(subscription: Subscription) -> Ending:
        chunks = aiter(subscription)
        await anext(chunks)
        await chunks.aclose()  # what Starlette does when the client goes away
        return subscription.ending

    async def scenario() -> list[Ending]:
        tailer = Tailer(store, settings.streams_by_type, interval=0.02)
        hanging = HangingHeads(store, reads_before_hanging=0)
        stalling = Tailer(hanging, settings.streams_by_type, interval=0.02)  # type: ignore[arg-type]
        stalls = plan(settings, {}, seconds=60, heartbeat=0.1, stall=0.3)
        endings = [
            await to_the_end(Subscription(store, tailer, plan(settings, {}, seconds=0.2))),
            await to_the_end(Subscription(store, stalling, stalls)),
            await left_after_one_chunk(Subscription(store, tailer, plan(settings, {}, seconds=60))),
            await to_the_end(Subscription(Broken(), tailer, plan(settings, {}, seconds=60))),  # type: ignore[arg-type]
        ]
        hanging.thaw()
        return endings

    assert run(scenario()) == [Ending.PLANNED, Ending.STALLED, Ending.CLIENT_LEFT, Ending.FAILED]


def test_a_head_the_tailer_cannot_read_up_to_is_never_passed_over(store, publisher, settings):
    """The heads say a stream moved on, but the read of its new events finds nothing (a torn read):
    memory must not claim to reach that head, or every stream would skip the event."""
    from streaming.results import Page

    class FirstReadFindsNothing:
        def __init__(self) -> None:
            self.empty_reads = 0

        def heads(self, types=None):
            return store.heads(types)

        def after(self, position, types, limit):
            if not self.empty_reads:
                self.empty_reads += 1
                return Page(events=[], cursor=dict(position), more=False, truncated=False)
            return store.after(position, types, limit)

    async def scenario() -> int:
        reads = FirstReadFindsNothing()
        tailer = Tailer(reads, settings.streams_by_type, interval=0.01)
        start = store.heads()
        await tailer.watch(frozenset(start))  # memory begins at the current heads
        [stored] = await asyncio.to_thread(publisher.publish, [signal()], "tests")
        chunks: list[bytes] = []
        stream = asyncio.ensure_future(
            _drain(Subscription(store, tailer, plan(settings, start, seconds=60)), chunks)
        )
        try:
            await until(lambda: stored.id in _ids(chunks), "the event, read from the store")
        finally:
            stream.cancel()
        return reads.empty_reads

    assert run(scenario()) == 1


def test_a_stream_whose_lease_was_taken_ends_as_replaced_at_its_next_heartbeat(store, publisher, settings):
    """A newer stream of the same subject took the lease (streaming.leases): at its next heartbeat the
    stream ends with reason `replaced` and the cursor so far, and until then it asks once per
    heartbeat after the first, not once per event."""
    from streaming.subscription import Ending

    start = store.heads()
    revoked, checks = threading.Event(), [0]

    def still_leased() -> bool:
        checks[0] += 1
        return not revoked.is_set()

    async def scenario() -> tuple[Subscription, list[bytes]]:
        tailer = Tailer(store, settings.streams_by_type, interval=0.01)
        subscription = Subscription(
            store, tailer, plan(settings, start, seconds=60, heartbeat=0.1), still_leased=still_leased
        )
        chunks: list[bytes] = []
        stream = asyncio.ensure_future(_drain(subscription, chunks))
        await until(lambda: _heartbeats(chunks) >= 1, "the first heartbeat")
        await asyncio.to_thread(publisher.publish, [signal() for _ in range(5)], "tests")
        await until(lambda: len(_ids(chunks)) == 5 and _heartbeats(chunks) >= 3, "events, two more beats")
        revoked.set()
        async with asyncio.timeout(30):
            await stream  # it ends by itself
        return subscription, chunks

    subscription, chunks = run(scenario())
    messages = parse(b"".join(chunks))
    end = messages[-1]
    assert (end["event"], json.loads(end["data"])) == ("end", {"reconnect": True, "reason": "replaced"})
    assert cursors.decode(end["id"])["market"] == 5  # resumes after the last event it wrote
    assert checks[0] == _heartbeats(chunks)  # each heartbeat but the first, and the one that ended it
    assert (subscription.ending, subscription.ending.kind) == (Ending.REPLACED, "planned")
