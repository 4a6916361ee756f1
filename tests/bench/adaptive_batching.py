"""Adaptive batching across publishes: frames per event and hand-over-to-receive latency at 1, 100 and
1,000 single-event publishes per second, with and without folding (streaming.outbox), in one run.

Starts the local stack (`make run` on free loopback ports) and, in a process of their own, N WebSocket
subscribers (viewer tokens, `signal.created`). Each event is one publish: a thread of a pool of
PUBLISHERS (the concurrent publish invocations of one execution environment) hands it to FanOut.send
for all N connections, which posts through the local gateway's real `@connections` API (SigV4
checked) to the real WebSocket connections. Events are handed over on an open-loop schedule at the
given rate; latency runs from an event's scheduled hand-over to its arrival at a subscriber. It leaves
out the store commit and the audience Query (the same with or without folding; docs/performance.md
has them), which on moto would cap the rate far below 1,000 events/s. Loopback only, bounded by rate,
duration and connections; prints one table and, with `--json PATH`, writes
{"adaptive_batching": {"1": {"frames_per_event", "p50_ms", "p99_ms", ...}, "100": ..., "1000": ...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import websockets

from handlers.composition import FANOUT_WORKERS
from local.state import LocalState
from local.token import issue
from stacks.config import load
from streaming.connections import ConnectionRegistry
from streaming.events import Envelope, format_ts
from streaming.fanout import FanOut, Recipient
from streaming.outbox import POSTS_IN_FLIGHT
from tests.chaos import server_side
from tests.integration.conftest import connection_ids, outputs, running_local_stack
from tools.load import percentiles

PUBLISHERS = 16  # publishes in flight at once
TYPES = frozenset({"signal.created"})
SETTLE_SECONDS = 30  # after the last hand-over, for the last frames to arrive (a loaded machine)


# -- the subscribers, in a process of their own ------------------------------------------------------


def subscribers(directory: str, connections: int, pipe: Connection) -> None:
    """Open `connections` subscribers, then answer the parent's commands: "count" (events received),
    "collect" (every message received since the last collect: arrival time and event ids), "stop"."""
    asyncio.run(_subscribe(LocalState(Path(directory)), connections, pipe))


async def _subscribe(state: LocalState, connections: int, pipe: Connection) -> None:
    url = outputs(state)["WebSocketUrl"]
    received: list[tuple[float, list[str]]] = []
    counted = 0

    async def open_one(index: int) -> Any:
        token = issue(state, "viewer", f"batching-{index}")
        ws = await websockets.connect(url, subprotocols=["streaming.v1", f"token.{token}"], max_queue=None)
        await ws.send(json.dumps({"action": "subscribe", "types": sorted(TYPES)}))
        while json.loads(await ws.recv())["type"] != "subscribed":
            pass
        return ws

    async def listen(ws: Any) -> None:
        nonlocal counted
        async for raw in ws:
            now = time.time()
            ids = [event["id"] for event in json.loads(raw).get("events", [])]
            if ids:
                received.append((now, ids))
                counted += len(ids)

    sockets = await asyncio.gather(*(open_one(i) for i in range(connections)))
    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    pipe.send("ready")
    while (command := await asyncio.to_thread(pipe.recv)) != "stop":
        if command == "count":
            pipe.send(counted)
        elif command == "collect":
            pipe.send(received[:])
            received.clear()
            counted = 0
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


# -- the publishers -------------------------------------------------------------------------------


def run(fanout: FanOut, connections: list[str], pipe: Connection, rate: float, events: int) -> dict[str, Any]:
    """Hand `events` single-event publishes to `fanout` at `rate` per second; what the subscribers saw."""
    handed: dict[str, float] = {}
    frames_posted = 0
    lock = threading.Lock()

    def publish(event: Envelope) -> None:
        nonlocal frames_posted
        report = fanout.send([Recipient(connection_id, TYPES, [event]) for connection_id in connections])
        with lock:
            frames_posted += report.frames

    start = time.time() + 0.2
    with ThreadPoolExecutor(PUBLISHERS, thread_name_prefix="publish") as publishers:
        for seq in range(1, events + 1):
            at = start + (seq - 1) / rate
            time.sleep(max(0.0, at - time.time()))
            event = _event(seq, at)
            handed[event.id] = at
            publishers.submit(publish, event)
    return {**received(pipe, handed, len(connections)), "frames_posted": frames_posted}


def received(pipe: Connection, handed: dict[str, float], connections: int) -> dict[str, Any]:
    """What the subscribers received of the events `handed` (id -> when), once every connection has
    them all or SETTLE_SECONDS passed: deliveries, frames per event, latency from hand-over."""
    expected = len(handed) * connections
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        pipe.send("count")
        if pipe.recv() >= expected:
            break
        time.sleep(0.05)
    pipe.send("collect")
    messages: list[tuple[float, list[str]]] = pipe.recv()
    latencies = sorted(
        (arrival - handed[event_id]) * 1000
        for arrival, ids in messages
        for event_id in ids
        if event_id in handed
    )
    frames = sum(1 for _, ids in messages if any(event_id in handed for event_id in ids))
    percentile = percentiles(latencies)
    return {
        "events": len(handed),
        "deliveries": len(latencies),
        "expected": expected,
        "frames": frames,
        "frames_per_event": round(frames / max(1, len(latencies)), 3),
        "p50_ms": round(percentile["p50"], 1) if latencies else None,
        "p99_ms": round(percentile["p99"], 1) if latencies else None,
    }


def _event(seq: int, at: float) -> Envelope:
    return Envelope(
        str(uuid.uuid4()), "signal.created", "market", seq, seq - 1, format_ts(int(at * 1000)), 1,
        {"signal_id": f"sig-{seq}", "strength": 0.7}, "bench", type_heads={"signal.created": seq},
    )  # fmt: skip


def measure(state: LocalState, connections: int, rates: list[int], seconds: float) -> dict[str, Any]:
    """Against a running local stack: per rate, both variants, each after a few warm-up events."""
    with subscribed(state, connections) as parent:
        ids = connection_ids(state)
        registry = ConnectionRegistry(None, "unused", load("dev").runtime_settings("t").roles)  # no 410
        management = server_side(state)
        results: dict[str, Any] = {}
        with ThreadPoolExecutor(FANOUT_WORKERS, thread_name_prefix="fanout") as executor:
            for rate in rates:
                events = max(5, round(rate * seconds)) if rate > 1 else 10
                runs = {}
                for fold in (False, True):
                    fanout = FanOut(
                        registry, management, compress_above=8192, chunk_connections=len(ids),
                        executor=executor, posts_in_flight=POSTS_IN_FLIGHT if fold else None,
                    )  # fmt: skip
                    run(fanout, ids, parent, rate, 2 if rate <= 1 else min(events, 20))  # warm-up
                    runs[fold] = run(fanout, ids, parent, rate, events)
                results[str(rate)] = {**runs[True], "without_folding": runs[False]}
    return results


@contextlib.contextmanager
def subscribed(state: LocalState, connections: int) -> Iterator[Connection]:
    """`connections` subscribers in a process of their own, connected; the pipe that commands them."""
    spawn = multiprocessing.get_context("spawn")
    parent, child = spawn.Pipe()
    process = spawn.Process(target=subscribers, args=(str(state.directory), connections, child), daemon=True)
    process.start()
    try:
        if not parent.poll(120) or parent.recv() != "ready":
            raise RuntimeError("the subscribers did not connect within 120 s")
        yield parent
        parent.send("stop")
    finally:
        process.join(timeout=15)
        if process.is_alive():
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--rates", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--seconds", type=float, default=2.0, help="per rate above 1/s (1/s: 10 events)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.connections > 200 or max(args.rates) > 2000 or args.seconds > 10:
        parser.error("keep the benchmark bounded: at most 200 connections, 2,000 events/s and 10 s per rate")
    with tempfile.TemporaryDirectory() as directory, running_local_stack(Path(directory)) as state:
        results = measure(state, args.connections, args.rates, args.seconds)
    print(
        f"local stack on loopback, {os.cpu_count()} cores shared by stack, publishers and subscribers; "
        f"{args.connections} connections, {PUBLISHERS} publishes in flight at most"
    )
    print("| events/s | events | fan-out | delivered | frames per event | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for rate, row in results.items():
        for name, figures in (
            ("each publish posts alone", row["without_folding"]),
            ("folding (shipped)", row),
        ):
            delivered = f"{figures['deliveries']}/{figures['expected']}"
            print(
                f"| {int(rate):,} | {figures['events']} | {name} | {delivered} "
                f"| {figures['frames_per_event']:.3f} | {figures['p50_ms']} | {figures['p99_ms']} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"adaptive_batching": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
