"""Fan-out deliveries per second against a loopback `@connections` endpoint that answers each POST
after an injected delay (a stand-in for API Gateway's round trip), and the client CPU per delivery.

Compares the shipped fan-out (FanOut.send: kept-alive connections per worker, SigV4 signed by
streaming.management, 32 workers) with the sequential baseline: boto3's `post_to_connection`, one
after another. Loopback only, bounded by delivery count; prints one table for docs/performance.md and,
with `--json PATH`, writes the figures as {"cpu_ms_per_delivery": ..., "fanout": {...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.credentials import Credentials

from handlers.composition import FANOUT_WORKERS
from local.aws import REGION
from stacks.config import load
from streaming.connections import ConnectionRegistry
from streaming.events import Envelope
from streaming.fanout import FanOut, Recipient
from streaming.management import ManagementApi

STAGE = "bench"
TYPES = frozenset({"signal.created"})  # what each benchmark connection subscribes to


def serve(port: int, delay_ms: float) -> None:
    """The stub endpoint (run in its own process): every POST answers 200 after `delay_ms`."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(delay_ms / 1000)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=2048)


def sequential_boto3(url: str, count: int, frame: bytes) -> tuple[float, float]:
    import boto3

    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    client.post_to_connection(ConnectionId="warm-up", Data=frame)
    return _measure(
        lambda: [client.post_to_connection(ConnectionId=f"c{i}=", Data=frame) for i in range(count)], count
    )


def shipped_fanout(url: str, count: int, envelope: Envelope, workers: int) -> tuple[float, float]:
    management = ManagementApi(url, REGION, _FrozenCredentials())
    registry = ConnectionRegistry(None, "unused", load("dev").runtime_settings("t").roles)  # no 410 here
    with ThreadPoolExecutor(workers) as executor:
        fanout = FanOut(registry, management, compress_above=8192, chunk_connections=count, executor=executor)
        fanout.send([Recipient("warm-up", TYPES, [envelope])] * workers)  # open the pool's connections
        recipients = [Recipient(f"c{i}=", TYPES, [envelope]) for i in range(count)]
        return _measure(lambda: fanout.send(recipients), count)


def _median(repeat: int, run: Any) -> tuple[float, float]:
    """The run with the median rate (its rate and CPU), out of `repeat`."""
    runs = sorted((run() for _ in range(max(1, repeat))), key=lambda result: result[0])
    return runs[len(runs) // 2]  # type: ignore[no-any-return]


def _measure(work: Any, count: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return count / wall, cpu / count * 1000


class _FrozenCredentials:
    def get_frozen_credentials(self) -> Credentials:
        return Credentials("bench", "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--baseline-deliveries", type=int, default=300)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median run is printed")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.deliveries > 20_000:
        parser.error("keep the benchmark bounded: at most 20,000 deliveries")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from tests.bench.fanout_throughput import serve; serve({port}, {args.delay_ms})",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(["lambdas", "."])},
    )
    try:
        _wait_for(port)
        url = f"http://127.0.0.1:{port}/{STAGE}"
        envelope = Envelope(
            "0192f1c4-8d2e-7a51-9c3b-000000000001", "signal.created", "market", 1, 0,
            "2026-11-27T08:00:00.000Z", 1, {"signal_id": "sig-1", "strength": 0.7}, "bench",
            type_heads={"signal.created": 1},
        )  # fmt: skip
        frame = b'{"type":"events","events":[' + b"{}" * 200 + b"]}"
        rows = [
            ("boto3 post_to_connection, sequential", args.baseline_deliveries,
             *_median(args.repeat, lambda: sequential_boto3(url, args.baseline_deliveries, frame))),
            ("shipped client, one worker (CPU without thread contention)", args.baseline_deliveries,
             *_median(args.repeat, lambda: shipped_fanout(url, args.baseline_deliveries, envelope, 1))),
            (f"shipped fan-out, {FANOUT_WORKERS} workers", args.deliveries,
             *_median(args.repeat, lambda: shipped_fanout(url, args.deliveries, envelope, FANOUT_WORKERS))),
        ]  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        f"endpoint delay {args.delay_ms:g} ms, loopback, {os.cpu_count()} cores, median of {args.repeat} runs"
    )
    print("| client | deliveries | deliveries/s | client CPU ms/delivery |")
    print("|---|---|---|---|")
    for name, count, rate, cpu in rows:
        print(f"| {name} | {count} | {rate:,.0f} | {cpu:.3f} |")
    speedup = rows[-1][2] / rows[0][2]
    print(f"speed-up over the sequential baseline: {speedup:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(figures(rows, speedup, args.delay_ms), indent=2) + "\n")


def figures(rows: list[tuple[str, int, float, float]], speedup: float, delay_ms: float) -> dict[str, Any]:
    """The rows as `make bench` merges them into docs/performance.json."""
    (_, _, baseline_rate, baseline_cpu), (_, _, one_rate, one_cpu), (_, deliveries, rate, cpu) = rows
    return {
        "cpu_ms_per_delivery": round(cpu, 3),
        "fanout": {
            "speedup_vs_sequential": round(speedup, 1),
            "deliveries_per_s": round(rate),
            "deliveries": deliveries,
            "workers": FANOUT_WORKERS,
            "endpoint_delay_ms": delay_ms,
            "sequential_boto3": {
                "deliveries_per_s": round(baseline_rate),
                "cpu_ms_per_delivery": round(baseline_cpu, 3),
            },
            "one_worker": {"deliveries_per_s": round(one_rate), "cpu_ms_per_delivery": round(one_cpu, 3)},
        },
    }


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the stub endpoint did not start")


if __name__ == "__main__":
    main()
