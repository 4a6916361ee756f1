"""SSE's contract (docs/protocol.md): the stream delivers what is published, each event with an id a
client resumes from (`Last-Event-ID`), and cursors cross between SSE and the WebSocket API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from streaming import cursor as cursors
from tests.conftest import signal
from tests.contract.target import TIMEOUT, Target, receive, send

pytestmark = [pytest.mark.contract, pytest.mark.xdist_group("local-stack")]
ROLE, TYPE = "viewer", "signal.created"


def read(
    target: Target, ids: Sequence[str], *, params: dict[str, str], headers: dict[str, str] | None = None
) -> list[ServerSentEvent]:
    """The stream's events until each of `ids` has come: other producers' events and heartbeats left
    out. Fails if the stream ends first or they take longer than TIMEOUT."""
    token = target.tokens.token(ROLE)
    wanted, received = set(ids), []
    deadline = time.monotonic() + TIMEOUT
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=TIMEOUT)) as client,
        connect_sse(
            client,
            "GET",
            target.sse_url,
            params={"types": TYPE, **params},
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
        ) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            assert sse.event != "end" and time.monotonic() < deadline, f"got {len(received)} of {len(ids)}"
            if sse.data and sse.event != "heartbeat" and json.loads(sse.data)["id"] in wanted:
                received.append(sse)
                if len(received) == len(wanted):
                    break
    return received


def ids(events: list[ServerSentEvent]) -> list[str]:
    return [json.loads(sse.data)["id"] for sse in events]


def now_cursor(target: Target) -> str:
    return cursors.encode(target.publisher.streams()["streams"])


@pytest.mark.reconnect
@pytest.mark.events
def test_a_cut_stream_resumed_with_last_event_id_gets_exactly_the_missing_events(target: Target):
    cursor = now_cursor(target)
    first = [signal() for _ in range(3)]
    target.publisher.publish(first)
    before = read(target, [e["id"] for e in first], params={"cursor": cursor})
    assert ids(before) == [e["id"] for e in first]
    assert all(sse.id for sse in before)  # each one a place to resume from
    missed = [signal() for _ in range(4)]
    for event in missed:
        target.publisher.publish(event)
    after = read(target, [e["id"] for e in missed], params={}, headers={"Last-Event-ID": before[-1].id})
    assert ids(after) == [e["id"] for e in missed]


@pytest.mark.reconnect
@pytest.mark.events
def test_cursors_cross_between_websocket_and_sse_both_ways(target: Target):
    async def websocket_cursor_then_replay(
        cursor: str | None, expected: Sequence[str]
    ) -> tuple[str, list[str]]:
        async with await target.websocket(ROLE) as ws:
            await send(ws, action="subscribe", types=[TYPE])
            subscribed = await receive(ws, lambda m: m["type"] in ("subscribed", "error"))
            if cursor is None:
                return subscribed["cursor"], []
            await send(ws, action="replay", cursor=cursor, types=[TYPE])
            replayed: list[str] = []
            while True:  # the replayed events, then the summary with the cursor after them
                message = await receive(ws, lambda m: m["type"] in ("events", "replay", "error"))
                if message["type"] != "events":
                    break
                replayed += [e["id"] for e in message["events"] if e["id"] in expected]
            return message["cursor"], replayed

    ws_cursor, _ = asyncio.run(websocket_cursor_then_replay(None, []))
    later = [signal() for _ in range(2)]
    target.publisher.publish(later)
    over_sse = read(target, [e["id"] for e in later], params={"cursor": ws_cursor})
    assert ids(over_sse) == [e["id"] for e in later]

    even_later = [signal() for _ in range(2)]
    target.publisher.publish(even_later)
    expected = [e["id"] for e in even_later]
    _, over_ws = asyncio.run(websocket_cursor_then_replay(over_sse[-1].id, expected))
    assert over_ws == expected
