"""A producer of single events at a steady rate, with and without BatchingPublisher, through the whole
local stack: the signed publish API, the store on moto, the fan-out and N WebSocket subscribers.

Events are submitted on an open-loop schedule at the given rate by PRODUCERS threads of one process.
Without batching, each event is one publish request (as many in flight as threads); with it, the
threads hand their events to one BatchingPublisher (clients/publisher.py). Per rate and mode: publish
requests per event, events/s stored, and, from each event's scheduled time, when the publish answered
(p50/p99) and when subscribers received it (p50/p99), with frames per event. Loopback only, bounded by
rate, duration and connections; prints one table and, with `--json PATH`, writes
{"publish_batching": {"<rate>": {"batching": {...}, "one_request_per_event": {...}}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from clients.publisher import BatchingPublisher, PublishClient
from local.publish import local_client
from local.state import LocalState
from tests.bench.adaptive_batching import received, subscribed
from tests.conftest import signal
from tests.integration.conftest import running_local_stack
from tools.load import percentiles

PRODUCERS = 8  # threads of the producing process


def run(
    client: PublishClient, pipe: Any, connections: int, rate: float, events: int, *, batching: bool
) -> dict[str, Any]:
    """Submit `events` single events at `rate`; what the publish API and the subscribers made of them."""
    sizes: list[int] = []
    send = client.publish

    def counted(batch: Any) -> Any:
        sizes.append(len(batch) if isinstance(batch, list) else 1)
        return send(batch)

    client.publish = counted  # type: ignore[method-assign]
    handed: dict[str, float] = {}
    answered: list[float] = []
    lock = threading.Lock()

    def on_answer(at: float) -> Any:
        def record(_: Future[Any]) -> None:
            with lock:
                answered.append((time.time() - at) * 1000)

        return record

    with BatchingPublisher(client) as publisher, ThreadPoolExecutor(PRODUCERS) as producers:
        start = time.time() + 0.2
        futures = []
        for number in range(events):
            at = start + number / rate
            time.sleep(max(0.0, at - time.time()))
            event = signal()
            handed[event["id"]] = at
            future = publisher.submit(event) if batching else producers.submit(client.publish, event)
            future.add_done_callback(on_answer(at))
            futures.append(future)
        for future in futures:
            future.result(120)
        stored_in = time.time() - start
    client.publish = send  # type: ignore[method-assign]
    return {
        **received(pipe, handed, connections),
        "requests_per_event": round(len(sizes) / events, 3),
        "events_per_s": round(events / stored_in, 1),
        "answered_ms": percentiles(sorted(answered)),
    }


def measure(state: LocalState, connections: int, rates: list[int], seconds: float) -> dict[str, Any]:
    client = local_client(state)
    results: dict[str, Any] = {}
    with subscribed(state, connections) as pipe:
        for rate in rates:
            events = max(10, round(rate * seconds))
            results[str(rate)] = {}
            for name, batching in (("one_request_per_event", False), ("batching", True)):
                run(client, pipe, connections, rate, 5, batching=batching)  # warm-up
                results[str(rate)][name] = run(client, pipe, connections, rate, events, batching=batching)
    client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--rates", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate and mode")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.connections > 200 or max(args.rates) > 100 or args.seconds > 30:
        parser.error(  # 100 events/s: the local publisher's rate limit (docs/publishing.md)
            "keep the benchmark bounded: at most 200 connections, 100 events/s and 30 s per rate"
        )
    with tempfile.TemporaryDirectory() as directory, running_local_stack(Path(directory)) as state:
        results = measure(state, args.connections, args.rates, args.seconds)
    print(
        f"local stack on loopback, {os.cpu_count()} cores shared by stack, producer and subscribers; "
        f"{args.connections} connections, {PRODUCERS} producer threads"
    )
    print(
        "| events/s offered | producer | events/s stored | requests/event | answered p50/p99 ms "
        "| delivered | frames/event | received p50/p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rate, modes in results.items():
        for name, figures in modes.items():
            answered = figures["answered_ms"]
            print(
                f"| {int(rate):,} | {name.replace('_', ' ')} | {figures['events_per_s']} "
                f"| {figures['requests_per_event']:.3f} | {answered['p50']}/{answered['p99']} "
                f"| {figures['deliveries']}/{figures['expected']} | {figures['frames_per_event']:.3f} "
                f"| {figures['p50_ms']}/{figures['p99_ms']} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"publish_batching": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
