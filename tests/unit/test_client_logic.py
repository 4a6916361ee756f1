"""The subscriber's logic without a network: the resume rule (hold, reorder, de-duplicate, gaps, a
lost last event), the reconnect schedule, the clock-drift estimate and the planned reconnect a
`reconnect` notice starts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from clients.backoff import Backoff
from clients.cursor import decode_cursor, encode_cursor
from clients.drift import DriftEstimate
from clients.ordering import Ordering
from clients.subscriber import Endpoints, Subscriber, _WebSocketConnection
from streaming import cursor as server_cursors
from streaming.events import format_ts

pytestmark = pytest.mark.reconnect


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(seq: int, prev: int, stream: str = "market") -> dict[str, object]:
    return {"stream": stream, "seq": seq, "prev": prev, "type": "signal.created", "id": f"e{seq}"}


def seqs(events: list[dict[str, object]]) -> list[object]:
    return [e["seq"] for e in events]


def test_events_in_order_pass_straight_through_and_move_the_position():
    ordering = Ordering({"market": 4})
    assert seqs(ordering.offer(event(5, 4))) == [5]
    assert seqs(ordering.offer(event(9, 5))) == [9]  # 6..8 are of types this subscriber does not get
    assert ordering.position == {"market": 9} and ordering.held == 0


def test_an_event_whose_predecessor_is_missing_waits_then_both_go_in_order():
    clock = Clock()
    ordering = Ordering({"market": 4}, clock=clock)
    assert ordering.offer(event(7, 6)) == []
    clock.now += 0.4
    assert ordering.waiting() == pytest.approx(0.4)
    assert ordering.offer(event(6, 5)) == []
    assert seqs(ordering.offer(event(5, 4))) == [5, 6, 7]
    assert ordering.waiting() == 0.0 and ordering.position == {"market": 7}


@pytest.mark.degradation
def test_coalesced_events_are_next_like_any_other_and_what_they_stand_for_is_counted():
    ordering = Ordering({"market": 1})
    # 2, 4 and 5 were superseded by 6 and 7 (same type and key) and left out; prev skips them.
    assert seqs(ordering.offer(event(3, 1))) == [3]
    assert ordering.offer({**event(7, 6), "coalesced": 1}) == []  # 6 is still on its way: held
    assert seqs(ordering.offer({**event(6, 3), "coalesced": 2})) == [6, 7]
    assert ordering.coalesced == 3
    assert ordering.repeats == ordering.held == 0


def test_repeats_are_dropped_and_counted_whether_handed_over_or_held():
    ordering = Ordering({"market": 4})
    ordering.offer(event(5, 4))
    ordering.offer(event(7, 6))
    assert ordering.offer(event(5, 4)) == [] and ordering.offer(event(7, 6)) == []
    assert ordering.offer(event(3, 2)) == []
    assert ordering.repeats == 3


def test_streams_are_independent():
    ordering = Ordering({"market": 1, "risk": 1})
    assert ordering.offer(event(3, 2, "market")) == []
    assert seqs(ordering.offer(event(2, 1, "risk"))) == [2]


def test_an_adopted_position_releases_what_waited_and_drops_what_it_passed():
    ordering = Ordering({"market": 1})
    ordering.offer(event(3, 2))
    ordering.offer(event(6, 5))
    assert seqs(ordering.adopt({"market": 5})) == [6]  # 3 is behind the adopted position: a repeat
    assert ordering.position == {"market": 6} and ordering.repeats == 1


def test_history_goes_over_in_seq_order_without_the_prev_check_then_live_events_by_the_rule():
    ordering = Ordering()
    live_early = event(12, 11)  # arrived while history was read, before the history cursor
    history = [event(11, 7), event(9, 3), event(10, 9), live_early, event(14, 13), event(13, 12)]
    released = ordering.start({"market": 12, "ops": 4}, history)
    # 9..12 up to the cursor in seq order (9's prev 3 was never ours), then 13 and 14 by the rule
    assert seqs(released) == [9, 10, 11, 12, 13, 14]
    assert ordering.position == {"market": 14, "ops": 4}
    assert ordering.offer(event(12, 11)) == [] and ordering.repeats == 1


def test_history_leaves_a_live_event_with_a_missing_predecessor_held():
    ordering = Ordering()
    assert seqs(ordering.start({"market": 5}, [event(5, 2), event(8, 7)])) == [5]
    assert ordering.held == 1  # 8 waits for 6 and 7, which a replay from the position brings
    assert seqs(ordering.offer(event(7, 5))) == [7, 8]


def test_a_cut_forgets_what_was_held_and_the_cursor_resumes_from_the_position():
    ordering = Ordering({"market": 4, "ops": 2})
    ordering.offer(event(7, 6))
    ordering.cut()
    assert ordering.held == 0
    assert server_cursors.decode(ordering.cursor) == {"market": 4, "ops": 2}


def test_a_head_beyond_what_was_seen_or_scanned_means_a_replay_is_due():
    ordering = Ordering({"market": 4, "ops": 2})
    assert not ordering.behind({"market": 4, "ops": 2, "risk": 9})  # risk: not a stream it gets
    assert ordering.behind({"market": 5, "ops": 2})
    assert not ordering.behind({"market": 5, "ops": 2}, scanned={"market": 5})


def test_a_stream_empty_at_the_start_is_watched_so_its_first_event_lost_shows_in_the_heads():
    ordering = Ordering()
    ordering.adopt({"market": 4, "risk": 0})
    assert ordering.behind({"market": 4, "risk": 1})
    assert server_cursors.decode(ordering.cursor) == {"market": 4, "risk": 0}


def test_held_events_are_bounded():
    ordering = Ordering({"market": 0}, max_held=3)
    for seq in range(10, 15):
        ordering.offer(event(seq, seq - 1))
    assert ordering.held == 3


def test_cursors_match_the_servers_format_both_ways():
    position = {"market": 17, "risk": 4}
    assert encode_cursor(position) == server_cursors.encode(position)
    assert decode_cursor(server_cursors.encode(position)) == position
    with pytest.raises(ValueError):
        decode_cursor("nope")


def test_backoff_grows_with_full_jitter_up_to_the_cap_then_gives_up():
    top = Backoff(base_seconds=0.5, cap_seconds=4.0, max_attempts=6, jitter=lambda: 0.999999)
    assert [round(top.next_delay() or 0, 3) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert top.next_delay() is None  # terminal: the application is told
    bottom = Backoff(jitter=lambda: 0.0)
    assert bottom.next_delay() == 0.0  # full jitter reaches down to zero


def test_backoff_starts_afresh_after_a_stable_connection_only():
    clock = Clock()
    backoff = Backoff(base_seconds=1.0, stable_seconds=30.0, jitter=lambda: 0.999999, clock=clock)
    for _ in range(3):
        backoff.next_delay()
    backoff.connected()
    clock.now += 5  # dropped again quickly: the schedule goes on
    assert round(backoff.next_delay() or 0, 2) == 8.0
    backoff.connected()
    clock.now += 31  # stayed up: the next failure starts from the base
    assert round(backoff.next_delay() or 0, 2) == 1.0


def test_drift_comes_from_the_exchange_with_the_shortest_round_trip():
    drift = DriftEstimate()
    assert drift.offset_seconds is None
    # Server 2 s ahead; answered 0.2 s (and 0.02 s) after the ping went out.
    drift.add(1000.0, "1970-01-01T00:16:42.100Z", 1000.2)  # server 1002.1: offset 2.0
    drift.add(1010.0, "1970-01-01T00:16:52.010Z", 1010.02)  # server 1012.01: offset 2.0
    drift.add(1020.0, "1970-01-01T00:17:04.500Z", 1021.0)  # slow answer, skewed: ignored
    assert drift.offset_seconds == pytest.approx(2.0, abs=0.001)
    assert drift.uncertainty_seconds == pytest.approx(0.01)


class ScriptedSocket:
    """A WebSocket connection whose server says what the test tells it to; what the client sends is kept."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []

    def say(self, **message: Any) -> None:
        self.inbox.put_nowait(json.dumps({"server_time": format_ts(int(time.time() * 1000)), **message}))

    async def recv(self) -> str:
        return await self.inbox.get()

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self) -> None:
        pass


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.01)


def test_a_reconnect_notice_starts_the_planned_reconnect_at_once():
    async def scenario() -> None:
        subscriber = Subscriber(
            Endpoints("ws://127.0.0.1:9/", None), lambda: "token", {"signal.created"}, renew_before_seconds=60
        )
        ws = ScriptedSocket()
        connection = _WebSocketConnection(subscriber, ws)  # type: ignore[arg-type]
        try:
            expires_at = int(time.time()) + 3600
            ws.say(
                type="welcome",
                connection_id="c",
                role="viewer",
                allowed_types=[],
                heads={},
                expires_at=expires_at,
            )
            await eventually(lambda: connection.renew_in() < 3600)  # renews a minute before the token expires
            assert connection.renew_in() > 3000
            ws.say(type="reconnect", reason="token_expiring", at=expires_at)
            await eventually(lambda: connection.renew_in() == 0)
        finally:
            await connection.close()

    asyncio.run(scenario())
