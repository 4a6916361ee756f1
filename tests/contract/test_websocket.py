"""The WebSocket API's contract (docs/protocol.md): subscribe and receive what is published; resume
from a cursor after a disconnect and get each missed event once, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streaming import cursor as cursors
from tests.conftest import signal
from tests.contract.target import Target, events_until, receive, send

pytestmark = [pytest.mark.contract, pytest.mark.xdist_group("local-stack")]
ROLE, TYPE, STREAM = "viewer", "signal.created", "market"


def is_(kind: str) -> Any:
    return lambda message: message["type"] in (kind, "error")


@pytest.mark.events
def test_a_subscriber_receives_a_published_event(target: Target):
    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        async with await target.websocket(ROLE) as ws:
            await send(ws, action="subscribe", types=[TYPE])
            subscribed = await receive(ws, is_("subscribed"))
            event = signal()
            result = await asyncio.to_thread(target.publisher.publish, event)
            return subscribed, await events_until(ws, [event["id"]]), {**result, "sent": event}

    subscribed, [delivered], published = asyncio.run(scenario())
    assert subscribed["types"] == [TYPE]
    assert (delivered["id"], delivered["type"], delivered["data"]) == (
        published["sent"]["id"],
        TYPE,
        published["sent"]["data"],
    )
    assert (delivered["stream"], delivered["seq"]) == (STREAM, published["seq"])


@pytest.mark.reconnect
@pytest.mark.events
def test_reconnecting_with_the_cursor_replays_each_missed_event_once_in_order(target: Target):
    async def scenario() -> tuple[list[str], list[str], list[str], dict[str, Any]]:
        async with await target.websocket(ROLE) as first:
            await send(first, action="subscribe", types=[TYPE])
            await receive(first, is_("subscribed"))
            before = [signal() for _ in range(3)]
            await asyncio.to_thread(target.publisher.publish, before)
            seen = await events_until(first, [e["id"] for e in before])
        # The position a client resumes from: the last seq it processed, per stream.
        cursor = cursors.encode({STREAM: seen[-1]["seq"]})

        missed = [signal() for _ in range(5)]
        for event in missed:  # one publish each: five commits while nobody listens
            await asyncio.to_thread(target.publisher.publish, event)

        async with await target.websocket(ROLE) as second:
            await send(second, action="subscribe", types=[TYPE])
            await receive(second, is_("subscribed"))
            await send(second, action="replay", cursor=cursor, id="resume")
            replayed: list[dict[str, Any]] = []
            while True:  # the replayed events, then the summary
                message = await receive(second, lambda m: m["type"] in ("events", "replay", "error"))
                if message["type"] != "events":
                    break
                replayed.extend(message["events"])
            after = signal()
            await asyncio.to_thread(target.publisher.publish, after)
            live = await events_until(second, [after["id"]])
        return (
            [e["id"] for e in seen],
            [e["id"] for e in replayed],
            [e["id"] for e in live],
            {
                "summary": message,
                "before": [e["id"] for e in before],
                "missed": [e["id"] for e in missed],
                "after": after["id"],
            },
        )

    seen, replayed, live, facts = asyncio.run(scenario())
    assert seen == facts["before"]
    ours = set(facts["missed"])  # a deployed stack may carry other producers' events too
    assert [i for i in replayed if i in ours] == facts["missed"]  # each missed event once, in order
    assert not set(seen) & set(replayed)
    assert live == [facts["after"]]
    assert facts["summary"]["type"] == "replay" and facts["summary"]["id"] == "resume"
    assert facts["summary"]["count"] == len(replayed)
