"""Graceful degradation against the local stack (docs/reliability.md, "Graceful degradation"): with the
overload threshold set low (`--coalesce-above-events`), bursts of keyed proposal.updated events mixed
with risk.alert reach a subscriber on each transport coalesced by key: it ends with the latest state of
every key and every risk.alert, asks for no gap replay, counts what was left out as the server's
EventsCoalesced metric does, and a replay from its start cursor still returns every event."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from clients.subscriber import Endpoints, Subscriber
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from tests.conftest import example
from tests.integration.conftest import running_local_stack, until
from tests.integration.test_local_metrics import reaches
from tests.integration.test_websocket import connect

pytestmark = [pytest.mark.integration, pytest.mark.degradation, pytest.mark.xdist_group("local-stack")]
TYPES = ("proposal.updated", "risk.alert")
TRANSPORTS = ("websocket", "sse")
THRESHOLD = 5  # events pending for one subscriber above which it is overloaded
BURSTS, UPDATES, ALERTS = 6, 24, 3  # per burst: updates of 4 keys, alerts among them
KEYS = ("p-0", "p-1", "p-2", "p-3")
TIMEOUT = 90


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    # SSE polling: each transport's own coalescing, counted under its own name. A relayed stream
    # (sse.push) is coalesced by the fan-out at its relay's connection, counted as websocket.
    options = ("--coalesce-above-events", str(THRESHOLD), "--sse-poll")
    with running_local_stack(tmp_path_factory.mktemp("degradation"), *options) as state:
        yield state


def bursts(seed: int) -> list[list[dict[str, Any]]]:
    """Each burst one publish: updates of the keys in random order, risk alerts at random places."""
    settings, rng = load("dev").runtime_settings("t"), random.Random(seed)
    published = []
    for _ in range(BURSTS):
        batch = [{**example("proposal.updated", settings), "key": rng.choice(KEYS)} for _ in range(UPDATES)]
        for _ in range(ALERTS):
            batch.insert(rng.randrange(len(batch) + 1), example("risk.alert", settings))
        published.append(batch)
    return published


async def replayed_from(stack: LocalState, cursor: str) -> list[dict[str, Any]]:
    """Everything a WebSocket `replay` from `cursor` returns, page after page."""
    client = await connect(stack, "approver")
    await client.subscribe(*TYPES)
    events: list[dict[str, Any]] = []
    while True:
        await client.send(action="replay", cursor=cursor, limit=1000, id="replay")
        message = await client.answer("replay")  # the events messages before it stay pending
        assert message["type"] == "replay", message
        events += [e for m in client.pending if m["type"] == "events" for e in m["events"]]
        client.pending.clear()
        if not message["more"]:
            await client.ws.close()
            return events
        cursor = message["cursor"]


def test_overloaded_subscribers_get_the_latest_of_every_key_and_every_alert_and_replay_gets_all(stack):
    published = bursts(seed=12)
    endpoints = Endpoints.from_file(stack.endpoints_file)
    received: dict[str, list[dict[str, Any]]] = {transport: [] for transport in TRANSPORTS}

    async def scenario() -> tuple[dict[str, Subscriber], dict[str, str]]:
        subscribers = {
            transport: Subscriber(
                endpoints,
                lambda t=transport: issue(stack, "approver", f"overloaded-{t}"),
                TYPES,
                transport=transport,
            )
            for transport in TRANSPORTS
        }
        async with subscribers["websocket"], subscribers["sse"]:
            await until(lambda: all(s.started for s in subscribers.values()), TIMEOUT)
            starts = {transport: s.ordering.cursor for transport, s in subscribers.items()}

            async def take(transport: str) -> None:
                async for event in subscribers[transport]:
                    received[transport].append(event)

            readers = [asyncio.create_task(take(transport)) for transport in TRANSPORTS]
            for batch in published:
                await asyncio.to_thread(local_client(stack).publish, batch)
            # The last event of each type, here each of its own stream: a request's streams are committed
            # one after the other, so the request's last event need not be the last to arrive.
            last = {event["type"]: event["id"] for batch in published for event in batch}
            await until(
                lambda: all(set(last.values()) <= {e["id"] for e in got} for got in received.values()),
                TIMEOUT,
            )
            for reader in readers:
                reader.cancel()
            return subscribers, starts

    subscribers, starts = asyncio.run(scenario())
    everything = [event for batch in published for event in batch]
    latest = {event["key"]: event["id"] for event in everything if event["type"] == "proposal.updated"}
    alerts = [event["id"] for event in everything if event["type"] == "risk.alert"]
    for transport, subscriber in subscribers.items():
        got = received[transport]
        updates = [e for e in got if e["type"] == "proposal.updated"]
        state = {e["key"]: e["id"] for e in updates}
        coalesced = UPDATES * BURSTS - len(updates)
        print(
            f"{transport}: {len(everything)} published, {len(got)} received, {coalesced} coalesced, "
            f"{subscriber.gap_replays} gap replays"
        )
        assert state == latest, transport  # the latest state of every key
        assert [e["id"] for e in got if e["type"] == "risk.alert"] == alerts, transport  # every alert
        assert subscriber.gap_replays == 0, transport  # no replay storm
        assert coalesced > 0 and subscriber.coalesced == coalesced, transport
        assert sum(e.get("coalesced", 0) for e in updates) == coalesced, transport
        series = f'streaming_events_coalesced_total{{transport="{transport}",type="proposal.updated"}}'
        assert reaches(stack, {series: coalesced})[series] == coalesced, transport
        replayed = asyncio.run(replayed_from(stack, starts[transport]))
        assert Counter(e["id"] for e in replayed) == Counter(e["id"] for e in everything), transport
        assert not any("coalesced" in e for e in replayed), transport
