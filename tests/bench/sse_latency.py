"""SSE: publish-to-receive latency at N open streams on the local stack, and the store requests one
open stream costs per minute, for both live sources: polling the store (at the configured interval)
and relaying the WebSocket API's pushes (sse.push, streaming.relay).

Part 1 runs one subscription in this process, as one Lambda execution environment would, and counts
the DynamoDB requests it makes while idle and while one event per second arrives (its lease checks,
one per heartbeat, among them and apart): polling against moto on loopback; relaying against the
local stack, where the WebSocket route handler's head reads on the stream's behalf (for `welcome`,
`subscribed` and every `pong`) are added, counted from the answers the relay received. Part 2 starts
the local stack (polling, then relaying), opens N streams (httpx-sse, viewer tokens, signal.created),
publishes events one after another and records, per delivery, the time from the start of the publish
request to the event's arrival. Loopback only, bounded by counts and time; prints tables for
docs/performance.md, and with `--json PATH` writes the relaying (shipped) figures there.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from local.__main__ import CONNECTIONS_TABLE, TABLE
from local.aws import moto_client, start_moto
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from stacks.table_layouts import CONNECTIONS, EVENTS, create_table
from streaming.leases import StreamLeases
from streaming.listeners import websocket_connection
from streaming.publish import Publisher
from streaming.relay import Relay
from streaming.settings import SseSettings
from streaming.sse_plan import StreamPlan
from streaming.store import EventStore
from streaming.subscription import Subscription
from streaming.tail import Tailer
from tests.conftest import signal
from tests.integration.conftest import outputs, running_local_stack


class CountingClient:
    """A boto3 DynamoDB client that counts the requests made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.exceptions = client.exceptions
        self.requests = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)

        def counted(**kwargs: Any) -> Any:
            with self._lock:
                self.requests += 1
            return call(**kwargs)

        return counted


def viewer_plan(streams_by_type: dict[str, str], sse: SseSettings, seconds: float) -> StreamPlan:
    """A viewer's stream of every type it may see, from the heads, for `seconds`."""
    visible = load("dev").runtime_settings(TABLE).roles.visible("viewer")
    return StreamPlan(
        role="viewer",
        types=visible,
        streams=frozenset(streams_by_type[t] for t in visible),
        position={},
        heartbeat_seconds=sse.heartbeat_seconds,
        stall_seconds=sse.stall_seconds,
        max_stream_seconds=seconds,
        retry_ms=sse.retry_ms,
        compress_above=sse.compress_above_bytes,
    )


def run_stream(
    store: EventStore, live: Any, plan: StreamPlan, still_leased: Any, publish: Any, events_per_second: float
) -> None:
    """One subscription to its planned end, with `events_per_second` published meanwhile."""

    async def run() -> None:
        async def publishing() -> None:
            while events_per_second:
                await asyncio.sleep(1 / events_per_second)
                await asyncio.to_thread(publish, signal())

        producer = asyncio.create_task(publishing())
        async for _ in Subscription(store, live, plan, still_leased=still_leased):
            pass
        producer.cancel()

    asyncio.run(run())


def polling_requests_per_minute(seconds: float, events_per_second: float) -> tuple[float, float]:
    """One polling subscription's DynamoDB requests per minute, with `events_per_second` published
    meanwhile, and of those its lease checks."""
    config = load("dev")
    table = f"bench-events-{events_per_second:g}"  # moto's tables live as long as this process
    leases_table = f"bench-connections-{events_per_second:g}"
    settings = config.runtime_settings(table)
    server, url = start_moto()
    try:
        raw = moto_client("dynamodb", url)
        create_table(raw, table, EVENTS)
        create_table(raw, leases_table, CONNECTIONS)
        counting, lease_checks = CountingClient(raw), CountingClient(raw)
        still_leased = leased_stream(raw, lease_checks, leases_table, seconds)
        store = EventStore(counting, table, settings.streams_by_type, settings.replay_window_seconds)
        publisher = Publisher(settings, EventStore(raw, table, settings.streams_by_type, 86400))
        sse = config.sse_settings(table, "")
        tailer = Tailer(store, settings.streams_by_type, sse.poll_interval_ms / 1000)
        plan = viewer_plan(dict(settings.streams_by_type), sse, seconds)
        run_stream(
            store, tailer, plan, still_leased, lambda e: publisher.publish(e, "bench"), events_per_second
        )
        checks = lease_checks.requests
        return (counting.requests + checks) / seconds * 60, checks / seconds * 60
    finally:
        server.shutdown()


def leased_stream(client: Any, checks: Any, table: str, seconds: float) -> Callable[[], bool]:
    """A viewer stream's lease for the subject "bench", and the check the stream makes with it at each
    heartbeat, its requests counted on `checks`."""
    lease = StreamLeases(client, table).acquire("bench", 5, seconds, role="viewer", replaceable_after=15)
    assert lease is not None
    return functools.partial(StreamLeases(checks, table).held, "bench", lease)


def push_requests_per_minute(seconds: float, events_per_second: float) -> tuple[float, float]:
    """The same for a subscription relaying from the local stack's WebSocket API: its own requests, the
    route handler's head reads for it (welcome, subscribed, each pong: one per stream its role sees),
    and of those its lease checks."""
    config = load("dev")
    settings = config.runtime_settings(TABLE)
    with tempfile.TemporaryDirectory() as directory, running_local_stack(Path(directory)) as state:
        endpoints = outputs(state)
        raw = moto_client("dynamodb", endpoints["AwsEndpointUrl"])
        counting, lease_checks = CountingClient(raw), CountingClient(raw)
        still_leased = leased_stream(raw, lease_checks, CONNECTIONS_TABLE, seconds)
        store = EventStore(counting, TABLE, settings.streams_by_type, settings.replay_window_seconds)
        sse = config.sse_settings(CONNECTIONS_TABLE, endpoints["WebSocketUrl"])
        plan = viewer_plan(dict(settings.streams_by_type), sse, seconds)
        token = issue(state, "viewer", "bench")
        connect = functools.partial(websocket_connection, sse.push_url, token, open_timeout=10)
        tailer = Tailer(store, settings.streams_by_type, sse.poll_interval_ms / 1000)
        relay = Relay(connect, tailer, plan.types, patience=sse.heartbeat_seconds)
        publisher = local_client(state)
        run_stream(store, relay, plan, still_leased, publisher.publish, events_per_second)
        publisher.close()
        assert relay.fell_back is None, f"the relay fell back ({relay.fell_back}): not a push figure"
        role_streams = len({settings.streams_by_type[t] for t in settings.roles.visible("viewer")})
        on_its_behalf = (2 + relay.pongs) * role_streams
        checks = lease_checks.requests
        return (counting.requests + on_its_behalf + checks) / seconds * 60, checks / seconds * 60


async def latency(state: LocalState, streams: int, events: int, poll_ms: int) -> dict[str, Any]:
    url = outputs(state)["SseUrl"] + "events"
    publisher = local_client(state)
    arrivals: dict[str, list[float]] = {}
    ready = asyncio.Semaphore(0)

    async def listen(client: httpx.AsyncClient, index: int) -> None:
        token = issue(state, "viewer", f"bench-{index}")
        headers = {"Authorization": f"Bearer {token}"}
        params = {"types": "signal.created"}
        async with aconnect_sse(client, "GET", url, headers=headers, params=params) as source:
            async for sse in source.aiter_sse():
                if sse.event == "heartbeat":
                    ready.release()
                elif sse.event == "signal.created":
                    arrivals.setdefault(json.loads(sse.data)["id"], []).append(time.time())

    limits = httpx.Limits(max_connections=streams + 10)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None), limits=limits) as client:
        listeners = [asyncio.create_task(listen(client, i)) for i in range(streams)]
        for _ in range(streams):
            await asyncio.wait_for(ready.acquire(), 60)
        published: dict[str, float] = {}
        for index in range(events + 2):  # the first two are warm-up, not counted
            # A random moment within the poll interval: publishing right after the previous arrival
            # would always land just after a poll and measure the whole interval every time.
            await asyncio.sleep(random.uniform(0, poll_ms / 1000))
            event = signal()
            event_id = event["id"]
            published[event_id] = time.time()
            await asyncio.to_thread(publisher.publish, event)
            deadline = time.monotonic() + 30
            while len(arrivals.get(event_id, [])) < streams and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            if index < 2:
                arrivals.pop(event_id, None)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    latencies = sorted((t - published[i]) * 1000 for i, times in arrivals.items() for t in times)
    return {
        "streams": streams,
        "events": events,
        "deliveries": len(latencies),
        "delivered": f"{len(latencies)}/{streams * events}",
        "p50": statistics.median(latencies),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
        "max": latencies[-1],
    }


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60, help="length of each request-count run")
    parser.add_argument("--poll-ms", type=int, nargs="+", help="poll intervals to measure (default: config)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the relaying figures here")
    args = parser.parse_args()
    if args.streams > 500 or args.events > 200 or args.seconds > 120:
        parser.error("keep the benchmark bounded: at most 500 streams, 200 events, 120 s")
    interval = load("dev").sse.poll_interval_ms
    reads = {
        "polling": (
            polling_requests_per_minute(args.seconds, 0),
            polling_requests_per_minute(args.seconds, 1),
        ),
        "push": (push_requests_per_minute(args.seconds, 0), push_requests_per_minute(args.seconds, 1)),
    }
    runs: list[tuple[str, int, tuple[str, ...]]] = [
        ("polling", poll_ms, ("--sse-poll", "--sse-poll-interval-ms", str(poll_ms)))
        for poll_ms in args.poll_ms or [interval]
    ]
    runs.append(("push", interval, ()))
    rows = []
    for source, poll_ms, options in runs:
        with (
            tempfile.TemporaryDirectory() as directory,
            running_local_stack(Path(directory), *options) as state,
        ):
            rows.append((source, poll_ms, asyncio.run(latency(state, args.streams, args.events, poll_ms))))
    print(f"one open stream, poll interval {interval} ms, {args.seconds:g} s per run, {os.cpu_count()} cores")
    print(
        "| live source | published meanwhile | DynamoDB requests per stream-minute | of which lease checks |"
    )
    print("|---|---|---|---|")
    for source, (idle, busy) in reads.items():
        print(f"| {source} | nothing | {idle[0]:.1f} | {idle[1]:.1f} |")
        print(f"| {source} | 1 event/s | {busy[0]:.1f} | {busy[1]:.1f} |")
    print()
    print("| live source | poll ms | streams | events | delivered | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for source, poll_ms, row in rows:
        polled = poll_ms if source == "polling" else "-"
        print(
            f"| {source} | {polled} | {row['streams']} | {row['events']} | {row['delivered']} "
            f"| {row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} | {row['max']:.1f} |"
        )
    if args.json:
        pushed = next(row for source, _, row in rows if source == "push")
        figures = {
            "sse_latency_ms": {
                str(pushed["streams"]): {
                    key: pushed[key] for key in ("p50", "p95", "p99", "events", "deliveries")
                }
            },
            "sse_reads_per_stream_minute": round(reads["push"][0][0], 1),
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
