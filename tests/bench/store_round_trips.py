"""What a publish request waits for in the event store when every DynamoDB request takes a network
round trip, as it does deployed: moto answers in-process here, and a botocore hook makes each request
wait `--round-trip-ms` (default 5) in its calling thread first, so requests made at once wait it out
together, as on a network. A model, not a measurement of DynamoDB.

One publisher, one stream, requests of 1 and of 10 events; the id claims of a request one after
another (the store without an executor) and at once (with the composition root's executor). Prints
p50/p99 per request and with `--json PATH` writes {"store_round_trips": {...}}. In-process, bounded.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from handlers.composition import CLAIM_WORKERS
from stacks.config import load
from stacks.table_layouts import EVENTS, create_table
from streaming.events import parse_new_event
from streaming.store import EventStore
from tests.conftest import signal
from tools.load import percentiles


def request_ms(round_trip_ms: float, per_request: int, requests: int, *, concurrent: bool) -> list[float]:
    """Milliseconds per publish request, each request `per_request` new events to one stream."""
    settings = load("dev").runtime_settings("bench")
    with mock_aws(), ThreadPoolExecutor(CLAIM_WORKERS) as executor:
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "bench", EVENTS)
        client.meta.events.register("before-call.dynamodb", lambda **_: time.sleep(round_trip_ms / 1000))
        store = EventStore(
            client,
            "bench",
            settings.streams_by_type,
            settings.replay_window_seconds,
            executor=executor if concurrent else None,
        )
        timings = []
        for _ in range(requests):
            raws = [signal() for _ in range(per_request)]
            batch = [parse_new_event(raw, settings.catalog, settings.max_event_bytes) for raw in raws]
            started = time.perf_counter()
            store.append(batch, "bench")
            timings.append((time.perf_counter() - started) * 1000)
        return timings


def measure(round_trip_ms: float, requests: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"round_trip_ms": round_trip_ms}
    for per_request in (1, 10):
        for name, concurrent in (("one_after_another", False), ("at_once", True)):
            timings = percentiles(request_ms(round_trip_ms, per_request, requests, concurrent=concurrent))
            figures.setdefault(str(per_request), {})[name] = {
                "p50_ms": round(timings["p50"], 1),
                "p99_ms": round(timings["p99"], 1),
                "requests": requests,
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--round-trip-ms", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=100, help="per row")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.requests > 1000 or args.round_trip_ms > 50:
        parser.error("keep the benchmark bounded: at most 1,000 requests a row and 50 ms a round trip")
    figures = measure(args.round_trip_ms, args.requests)
    print(f"every DynamoDB request waits {args.round_trip_ms} ms first (moto in-process); one publisher")
    print("| events/request | claims | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for per_request in ("1", "10"):
        for name, row in figures[per_request].items():
            print(f"| {per_request} | {name.replace('_', ' ')} | {row['p50_ms']} | {row['p99_ms']} |")
    if args.json:
        args.json.write_text(json.dumps({"store_round_trips": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
