"""Publish-to-receive latency over the WebSocket API on the local stack, by audience size.

Starts `make run`'s local stack on free loopback ports, opens N WebSocket connections (viewer tokens,
subscribed to signal.created), publishes events one after another through the SigV4 publish endpoint
and records, per delivery, the time from the start of the publish request to the event's arrival.
Two warm-up events (first use of pools and connections) are published first and not counted.
Everything (stack, publisher, subscribers) shares this machine's cores. Loopback only, bounded by
connection and event counts; prints one table for docs/performance.md, and with `--json PATH` writes
{"ws_latency_ms": {N: {p50, p95, p99, max, events, deliveries, ...}}, "throughput": {N: {...}}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from local.publish import local_client
from local.state import LocalState
from local.token import issue
from tests.conftest import signal
from tests.integration.conftest import outputs, running_local_stack
from tools.load import percentiles

CONNECT_CONCURRENCY = 25
WARM_UP_EVENTS = 2


async def measure(state: LocalState, connections: int, events: int) -> dict[str, Any]:
    url = outputs(state)["WebSocketUrl"]
    publisher = local_client(state)
    arrivals: dict[str, list[float]] = {}
    sockets: list[Any] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(index: int) -> None:
        async with gate:
            token = issue(state, "viewer", f"bench-{index}")
            ws = await websockets.connect(
                url, subprotocols=["streaming.v1", f"token.{token}"], max_queue=None
            )
            await ws.send(json.dumps({"action": "subscribe", "types": ["signal.created"]}))
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
            sockets.append(ws)

    async def listen(ws: Any) -> None:
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            for event in message.get("events", []):
                arrivals.setdefault(event["id"], []).append(now)

    started = time.perf_counter()
    await asyncio.gather(*(open_one(i) for i in range(connections)))
    setup_seconds = time.perf_counter() - started
    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    for _ in range(WARM_UP_EVENTS):  # first use of the pools and connections: not steady state
        warm_up = signal()
        await asyncio.to_thread(publisher.publish, warm_up)
        await _until(lambda: len(arrivals.get(warm_up["id"], [])) >= connections, timeout=30)  # noqa: B023
    arrivals.clear()
    published: dict[str, float] = {}
    cpu = time.process_time()
    first = time.time()
    for _ in range(events):
        event = signal()
        event_id = event["id"]
        published[event_id] = time.time()
        await asyncio.to_thread(publisher.publish, event)
        await _until(lambda: len(arrivals.get(event_id, [])) >= connections, timeout=30)  # noqa: B023
    last = max((t for times in arrivals.values() for t in times), default=first)
    cpu = time.process_time() - cpu
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    latencies = sorted(
        (arrival - published[event_id]) * 1000 for event_id, times in arrivals.items() for arrival in times
    )
    expected = connections * events
    return {
        "connections": connections,
        "events": events,
        "delivered": len(latencies),
        "expected": expected,
        **percentiles(latencies),
        "events_per_second": events / (last - first),
        "deliveries_per_second": len(latencies) / (last - first),
        "subscriber_cpu_ms": cpu / max(1, len(latencies)) * 1000,
        "setup_seconds": setup_seconds,
    }


async def _until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return  # counted as missing deliveries, reported in the table
        await asyncio.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if max(args.connections) > 2000 or args.events > 200:
        parser.error("keep the benchmark bounded: at most 2,000 connections and 200 events")
    rows = []
    for connections in args.connections:
        with tempfile.TemporaryDirectory() as directory, running_local_stack(Path(directory)) as state:
            rows.append(asyncio.run(measure(state, connections, args.events)))
    print(f"local stack on loopback, {os.cpu_count()} cores shared by stack, publisher and subscribers")
    print(
        "| connections | events | delivered | p50 ms | p95 ms | p99 ms | max ms | deliveries/s "
        "| subscriber CPU ms/delivery | connect + subscribe s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['connections']} | {row['events']} | {row['delivered']}/{row['expected']} "
            f"| {row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} | {row['max']:.1f} "
            f"| {row['deliveries_per_second']:,.0f} "
            f"| {row['subscriber_cpu_ms']:.3f} | {row['setup_seconds']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(as_json(rows), indent=2) + "\n")


def as_json(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures by audience size, under the keys docs/performance.json uses."""
    latency_keys = ("p50", "p95", "p99", "max", "events", "expected", "subscriber_cpu_ms")
    return {
        "ws_latency_ms": {
            str(row["connections"]): {
                **{key: round(row[key], 3) for key in latency_keys},
                "deliveries": row["delivered"],
                "setup_s": round(row["setup_seconds"], 1),
            }
            for row in rows
        },
        "throughput": {
            str(row["connections"]): {
                "events_per_s": round(row["events_per_second"], 1),
                "deliveries_per_s": round(row["deliveries_per_second"], 1),
            }
            for row in rows
        },
    }


if __name__ == "__main__":
    main()
