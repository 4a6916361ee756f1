"""The relay (streaming.relay) against a scripted WebSocket API: what it keeps in memory from the
pushes, when it sends a subscription to the store instead, and how it falls back to polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from streaming import codec
from streaming import cursor as cursors
from streaming.events import Envelope
from streaming.relay import Relay

pytestmark = pytest.mark.events

TYPES = frozenset({"signal.created", "proposal.created", "proposal.updated"})  # a viewer's
MARKET = frozenset({"market"})


class Api:
    """The WebSocket API's end of one relay connection: what the relay sent, and what it is sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._inbox: asyncio.Queue[str | Exception] = asyncio.Queue()

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))

    async def recv(self) -> str:
        item = await self._inbox.get()
        if isinstance(item, Exception):
            raise item
        return item

    def push(self, message: dict[str, Any]) -> None:
        self._inbox.put_nowait(json.dumps(message))

    def subscribed(self, **heads: int) -> None:
        self.push(
            {"type": "subscribed", "id": "relay", "types": sorted(TYPES), "cursor": cursors.encode(heads)}
        )

    def events(self, *events: dict[str, Any]) -> None:
        self.push({"type": "events", "events": list(events)})

    def drop(self) -> None:
        self._inbox.put_nowait(ConnectionResetError("cut"))


class Polling:
    """The fallback: records what the relay hands over to it."""

    def __init__(self) -> None:
        self.watched: list[frozenset[str]] = []

    async def watch(self, streams: frozenset[str]) -> None:
        self.watched.append(streams)

    async def heads(self, streams: frozenset[str] = frozenset()) -> cursors.Position:
        return {"market": 99}

    def fresh(self, within: float) -> bool:
        return False

    def recover(self, stale_after: float) -> bool:
        return True

    def recent_after(
        self, position: cursors.Position, types: frozenset[str], streams: Iterable[str]
    ) -> tuple[list[Envelope], cursors.Position] | None:
        return [], {"market": 99}

    async def wait_beyond(self, position: cursors.Position, streams: frozenset[str], timeout: float) -> None:
        return None


def pushed(seq: int, prev: int, event_type: str = "signal.created", **data: Any) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-7000-8000-{seq:012d}",
        "type": event_type,
        "stream": "market",
        "seq": seq,
        "prev": prev,
        "ts": f"2026-11-30T10:00:{seq % 60:02d}.000Z",
        "schema_version": 1,
        "producer": "test",
        "data": data or {"n": seq},
    }


def relay_to(api: Api | Exception) -> tuple[Relay, Polling]:
    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Api]:
        if isinstance(api, Exception):
            raise api
        yield api

    polling = Polling()
    return Relay(connect, polling, TYPES, patience=30), polling


def seqs(found: tuple[list[Envelope], cursors.Position] | None) -> tuple[list[int], cursors.Position] | None:
    return None if found is None else ([e.seq for e in found[0]], found[1])


def run(test: Any) -> Any:
    return asyncio.run(asyncio.wait_for(test(), 30))


def test_it_subscribes_to_the_streams_types_and_holds_what_is_pushed_after_the_cursor():
    async def test() -> None:
        api = Api()
        relay, polling = relay_to(api)
        api.subscribed(market=5)
        await relay.watch(MARKET)
        assert api.sent == [{"action": "subscribe", "types": sorted(TYPES), "id": "relay"}]
        api.events(pushed(6, 5), pushed(7, 6, "proposal.created"))
        await relay.wait_beyond({"market": 6}, MARKET, 3600)  # woken by the push, not the timeout
        assert seqs(relay.recent_after({"market": 5}, TYPES, MARKET)) == ([6, 7], {"market": 7})
        assert seqs(relay.recent_after({"market": 6}, TYPES, MARKET)) == ([7], {"market": 7})
        assert seqs(relay.recent_after({"market": 6}, frozenset({"signal.created"}), MARKET)) == (
            [],
            {"market": 7},
        )
        # Before the cursor: only the store has it.
        assert relay.recent_after({"market": 4}, TYPES, MARKET) is None
        assert await relay.heads(MARKET) == {"market": 7}
        assert relay.fell_back is None and polling.watched == []

    run(test)


def test_an_event_whose_prev_is_ahead_restarts_memory_just_before_it_and_repeats_are_dropped():
    async def test() -> None:
        api = Api()
        relay, _ = relay_to(api)
        api.subscribed(market=5)
        await relay.watch(MARKET)
        api.events(pushed(6, 5), pushed(9, 8), pushed(9, 8), pushed(8, 7), pushed(10, 9))
        await relay.wait_beyond({"market": 9}, MARKET, 3600)
        # 7 and 8 were lost (or are late): a subscription at 6 reads the store, one at 8 needs none.
        assert relay.recent_after({"market": 6}, TYPES, MARKET) is None
        assert seqs(relay.recent_after({"market": 8}, TYPES, MARKET)) == ([9, 10], {"market": 10})

    run(test)


def test_events_pushed_before_subscribed_count_from_its_cursor():
    async def test() -> None:
        api = Api()
        relay, _ = relay_to(api)
        api.events(pushed(5, 4), pushed(6, 5))  # live events may come before `subscribed`
        api.subscribed(market=5)
        await relay.watch(MARKET)
        assert seqs(relay.recent_after({"market": 5}, TYPES, MARKET)) == ([6], {"market": 6})

    run(test)


def test_a_pushed_event_keeps_its_prev_and_its_data_when_written_over_sse():
    async def test() -> None:
        api = Api()
        relay, _ = relay_to(api)
        api.subscribed(market=5)
        await relay.watch(MARKET)
        large = "x" * 400
        wire = codec.encode_event(_envelope(pushed(6, 3, text=large)), 256, TYPES)
        assert wire["encoding"] == "gzip"  # as the fan-out sends data above compress_above_bytes
        api.events(wire)
        await relay.wait_beyond({"market": 5}, MARKET, 3600)
        found = relay.recent_after({"market": 5}, TYPES, MARKET)
        assert found is not None
        [event] = found[0]
        assert codec.encode_event(event, 8192, TYPES) == {**pushed(6, 3, text=large)}

    run(test)


@pytest.mark.parametrize(
    ("api", "reason"),
    [
        (ConnectionRefusedError("refused"), "unreachable"),
        ("error", "refused"),
        ("drop", "closed"),
    ],
)
def test_without_a_push_connection_it_falls_back_to_polling(api, reason, caplog):
    async def test() -> None:
        scripted = Api()
        if api == "error":
            scripted.push({"type": "error", "id": "relay", "code": "rate_limited", "message": "slow down"})
        elif api == "drop":
            scripted.subscribed(market=5)
        relay, polling = relay_to(scripted if isinstance(api, str) else api)
        await relay.watch(MARKET)
        if api == "drop":
            assert relay.fell_back is None
            waiting = asyncio.create_task(relay.wait_beyond({"market": 5}, MARKET, 3600))
            scripted.drop()
            await waiting  # woken by the fall back
            await relay.watch(MARKET)
        assert relay.fell_back == reason
        assert polling.watched == [MARKET]
        assert relay.recent_after({"market": 5}, TYPES, MARKET) == ([], {"market": 99})
        assert await relay.heads(MARKET) == {"market": 99}
        assert not relay.fresh(30) and relay.recover(30)

    run(test)


def _envelope(body: dict[str, Any]) -> Envelope:
    return Envelope(**body, type_heads={})
