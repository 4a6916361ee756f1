"""The Python subscriber under random cuts: subscribers of every role on both transports, behind
proxies that abort their connections at random (a lost network: no close, no `end`), while the server
also closes WebSocket connections and ends SSE streams as planned, and 4 publishers publish events of
every type. Every application gets every event its role and types allow, exactly once, in seq order
per stream, and nothing else. The figures are printed."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from clients.backoff import Backoff
from clients.subscriber import Endpoints, Subscriber
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from tests.chaos import expected_for, publish_at_random, server_side
from tests.integration.conftest import connection_ids, outputs, running_local_stack, until
from tests.network import CuttingProxy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.reconnect,
    pytest.mark.load,
    pytest.mark.xdist_group("local-stack"),
]
EVENTS, PUBLISHERS, SEED = 240, 4, 8


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("chaos"), "--sse-max-stream-seconds", "5") as state:
        yield state


def port(url: str) -> int:
    return urlsplit(url).port  # type: ignore[return-value]


def test_every_application_gets_its_events_exactly_once_in_order_under_random_cuts(stack):
    figures = asyncio.run(scenario(stack, random.Random(SEED)))
    print(json.dumps(figures))
    assert figures["cuts_by_network"] > 0 and figures["cuts_by_server"] > 0
    assert figures["expected"] > EVENTS  # every subscriber sees part of them, some several types
    for name in ("lost", "duplicates", "out_of_order", "unauthorized"):
        assert figures[name] == 0, name
    assert figures["delivered"] == figures["expected"]


async def scenario(stack: LocalState, rng: random.Random) -> dict[str, Any]:
    config, urls = load("dev"), outputs(stack)
    async with (
        CuttingProxy(port(urls["WebSocketUrl"])).running() as ws_proxy,
        CuttingProxy(port(urls["SseUrl"])).running() as sse_proxy,
    ):
        endpoints = Endpoints(f"ws://127.0.0.1:{ws_proxy.port}/", f"http://127.0.0.1:{sse_proxy.port}/events")
        subscribers: list[tuple[str, Subscriber]] = []
        received: dict[int, list[dict[str, Any]]] = {}
        for role, transport in itertools.product(sorted(config.roles), ("websocket", "sse")):
            subscriber = Subscriber(
                endpoints,
                lambda role=role: issue(stack, role, f"chaos-{role}"),  # type: ignore[misc]
                config.roles[role],
                transport=transport,
                backoff=Backoff(base_seconds=0.05, max_attempts=30),
                ping_seconds=1,
            )
            subscribers.append((role, subscriber))
            received[id(subscriber)] = []

        async def consume(subscriber: Subscriber) -> None:
            async for event in subscriber:
                received[id(subscriber)].append(event)

        for _, subscriber in subscribers:
            await subscriber.__aenter__()
        consumers = [asyncio.create_task(consume(s)) for _, s in subscribers]
        try:
            await until(lambda: all(s.started for _, s in subscribers))
            start = local_client(stack).streams()["streams"]
            server_cuts = 0
            cutter_done = asyncio.Event()

            async def cut_at_random() -> None:
                nonlocal server_cuts
                management = server_side(stack)
                while not cutter_done.is_set():
                    await asyncio.sleep(rng.uniform(0.05, 0.3))
                    choice = rng.random()
                    if choice < 0.4:
                        ws_proxy.cut(rng)
                    elif choice < 0.8:
                        sse_proxy.cut(rng)
                    elif ids := await asyncio.to_thread(connection_ids, stack):
                        await asyncio.to_thread(management.delete, rng.choice(ids))
                        server_cuts += 1

            cutter = asyncio.create_task(cut_at_random())
            types = sorted(config.event_types)
            share = [EVENTS // PUBLISHERS] * PUBLISHERS
            await asyncio.gather(*(publish_at_random(stack, rng, n, types, pause=0.05) for n in share))
            cutter_done.set()
            await cutter
            expected = {id(s): expected_for(stack, start, role, s.types) for role, s in subscribers}

            # Not asserted here: what is missing after the bound shows in the figures as lost.
            def complete() -> bool:
                return all(len(received[key]) >= len(events) for key, events in expected.items())

            await until(complete, 120, strict=False)
        finally:
            for task in consumers:
                task.cancel()
            for _, subscriber in subscribers:
                await subscriber.close()
        lost = duplicates = out_of_order = unauthorized = total = delivered = 0
        for role, subscriber in subscribers:
            got = [(e["stream"], e["seq"]) for e in received[id(subscriber)]]
            want = expected[id(subscriber)]
            total, delivered = total + len(want), delivered + len(got)
            lost += len(set(want) - set(got))
            duplicates += len(got) - len(set(got))
            unauthorized += sum(e["type"] not in config.roles[role] for e in received[id(subscriber)])
            for stream in {s for s, _ in got}:
                seqs = [seq for s, seq in got if s == stream]
                out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if a >= b)
        return {
            "subscribers": len(subscribers),
            "events": EVENTS,
            "expected": total,
            "delivered": delivered,
            "lost": lost,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "unauthorized": unauthorized,
            "cuts_by_network": ws_proxy.cuts + sse_proxy.cuts,
            "cuts_by_server": server_cuts,
            "connections": sum(s.connections for _, s in subscribers),
            "planned_sse_ends": sum(s.planned_reconnects for _, s in subscribers),
            "repeats_suppressed": sum(s.ordering.repeats for _, s in subscribers),
            "gap_replays": sum(s.gap_replays for _, s in subscribers),
        }
