"""`make load`: load on a stack, measured as a subscriber sees it. Opens N subscribers (the subscriber
library, clients/subscriber.py, over WebSocket or SSE), publishes events of one type at a steady rate
through the SigV4 publish API until the duration or the event count is reached, waits for every
subscriber to receive every event, and prints publish-to-receive percentiles.

    .venv/bin/python -m tools.load                                   # against `make run` (.local/)
    .venv/bin/python -m tools.load --connections 200 --rate 20 --duration 30 --json load.json
    .venv/bin/python -m tools.load --outputs cdk.out/outputs-dev.json --stack Streaming-dev

The local stack is the default: its endpoints file, its publisher identity and tokens minted with its
key (as `make token` does, one subject per connection). A deployed stack is used only when its
outputs file is named with `--outputs`; its tokens come from `STREAMING_TOKEN_<ROLE>` or
`STREAMING_TOKEN_COMMAND` as for `make contract` (docs/contract.md), and publishes are signed with
your AWS credentials. Without `--outputs` every URL must be on loopback. Everything is bounded
(LIMITS) and stops by itself. Exit status: 0 every delivery arrived, 1 some did not, 2 a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from botocore.credentials import Credentials

from clients.publisher import PublishError
from clients.subscriber import Endpoints, Subscriber, SubscriberFailed
from local.state import DEFAULT_DIR, LocalState
from local.token import issue
from streaming import constants as c
from streaming.events import EventCatalog
from tests.contract.target import NotLoopback, Target, TokenSource

LIMITS = {"connections": 1000, "rate": 100.0, "duration": 600.0, "events": 20_000, "drain": 120.0}
OPEN_AT_ONCE = 25  # subscribers connecting at the same time, as a crowd of clients arriving
START_SECONDS = 60  # the most one batch of subscribers may take to start
PUBLISHING_AT_ONCE = 8  # publish requests in flight, so a slow answer does not hold the rate back

TokenFor = Callable[[str, int], str]  # (role, connection number) -> token


@dataclass(frozen=True)
class Plan:
    connections: int = 20
    rate: float = 5.0  # events per second
    duration: float = 10.0  # seconds of publishing, at most
    events: int = 50  # events published, at most
    role: str = "viewer"
    event_type: str = "signal.created"
    transport: str = "websocket"
    drain: float = 30.0  # seconds to wait, after the last publish, for the deliveries still due


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """Nearest-rank p50, p95, p99 and the maximum, rounded to hundredths; empty without values."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 2)}


class ProgressBar:
    """One line on stderr, redrawn in place (tqdm is not among the pinned packages); silent when
    stderr is not a terminal, as in CI logs."""

    def __init__(self, total: int, stream: Any = sys.stderr, width: int = 30) -> None:
        self.total, self.stream, self.width = max(1, total), stream, width
        self.shown = stream.isatty()

    def show(self, done: int, note: str) -> None:
        if self.shown:
            filled = self.width * min(done, self.total) // self.total
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r[{bar}] {done}/{self.total} events, {note}  ")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")


def local_target(state_dir: Path) -> tuple[Target, TokenFor]:
    """`make run`'s stack: loopback only (Target.load refuses anything else), its publisher identity,
    and a token of its own for each connection."""
    state = LocalState(state_dir)
    if not state.endpoints_file.is_file():
        raise FileNotFoundError(f"{state.endpoints_file} not found: start the local stack (make run)")
    creds = state.credentials()
    target = Target.load(
        state.endpoints_file,
        TokenSource(),
        credentials=Credentials(creds.access_key_id, creds.secret_access_key),
    )
    return target, lambda role, number: issue(state, role, f"load-{number}")


def deployed_target(outputs: Path, stack: str | None) -> tuple[Target, TokenFor]:
    """A stack named by its outputs file: the one case where traffic leaves loopback."""
    tokens = TokenSource.from_environment()
    target = Target.load(outputs, tokens, stack=stack, remote_allowed=True)
    return target, lambda role, _number: tokens.token(role)


async def run(target: Target, token_for: TokenFor, plan: Plan) -> dict[str, Any]:
    endpoints = Endpoints(target.outputs[c.OUTPUT_WEBSOCKET_URL], target.sse_url)
    example = dict(EventCatalog.load().schema(plan.event_type, 1)["examples"][0])
    arrivals: dict[str, list[float]] = defaultdict(list)
    published: dict[str, float] = {}
    publish_ms: list[float] = []
    failures: list[str] = []
    consumers: list[asyncio.Task[None]] = []

    async def consume(subscriber: Subscriber) -> None:
        try:
            async for event in subscriber:
                arrivals[event["id"]].append(time.time())
        except SubscriberFailed as error:
            failures.append(str(error))

    async def publish(event: dict[str, Any], gate: asyncio.Semaphore) -> None:
        async with gate:
            started = published[event["id"]] = time.time()
            try:
                await asyncio.to_thread(target.publisher.publish, event)
            except (PublishError, httpx.HTTPError) as error:
                del published[event["id"]]
                failures.append(f"publish: {error}")
            publish_ms.append((time.time() - started) * 1000)

    def delivered() -> int:
        return sum(len(arrivals.get(event_id, ())) for event_id in published)

    total = min(plan.events, max(1, int(plan.rate * plan.duration)))
    progress = ProgressBar(total)
    async with contextlib.AsyncExitStack() as opened:
        opened.callback(progress.close)
        for first in range(0, plan.connections, OPEN_AT_ONCE):
            batch = [
                Subscriber(
                    endpoints, _token(token_for, plan.role, n), {plan.event_type}, transport=plan.transport
                )
                for n in range(first, min(plan.connections, first + OPEN_AT_ONCE))
            ]
            for subscriber in batch:
                await opened.enter_async_context(subscriber)
                consumers.append(asyncio.create_task(consume(subscriber)))
            if not await _within(START_SECONDS, functools.partial(_all_started, batch)):
                raise TimeoutError(f"subscribers {first}+ did not start within {START_SECONDS} s: {failures}")
        gate = asyncio.Semaphore(PUBLISHING_AT_ONCE)
        publishes = []
        began = time.monotonic()
        for number in range(total):
            await asyncio.sleep(max(0.0, began + number / plan.rate - time.monotonic()))
            publishes.append(asyncio.create_task(publish(_event(plan, example), gate)))
            progress.show(number + 1, f"{delivered():,} deliveries")
        await asyncio.gather(*publishes)
        publishing = time.monotonic() - began
        expected = len(published) * plan.connections
        drained_by = time.monotonic() + plan.drain
        while not await _within(0.25, lambda: delivered() >= expected) and time.monotonic() < drained_by:
            progress.show(total, f"{delivered():,}/{expected:,} deliveries")
    for consumer in consumers:
        consumer.cancel()
    latencies = [(t - published[i]) * 1000 for i in published for t in arrivals.get(i, ())]
    last_arrival = max((t for i in published for t in arrivals.get(i, ())), default=time.time())
    first_publish = min(published.values(), default=last_arrival)
    return {
        "target": target.stack,
        "transport": plan.transport,
        "connections": plan.connections,
        "role": plan.role,
        "event_type": plan.event_type,
        "rate_requested": plan.rate,
        "events_published": len(published),
        "events_per_s": round(len(published) / publishing, 2) if publishing else 0.0,
        "deliveries": len(latencies),
        "expected_deliveries": expected,
        "deliveries_per_s": round(len(latencies) / max(1e-9, last_arrival - first_publish), 1),
        "latency_ms": percentiles(latencies),
        "publish_ms": percentiles(publish_ms),
        "failures": failures[:20],
    }


def _event(plan: Plan, example: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": plan.event_type, "data": example}


def _all_started(subscribers: list[Subscriber]) -> bool:
    return all(subscriber.started for subscriber in subscribers)


def _token(token_for: TokenFor, role: str, number: int) -> Callable[[], str]:
    return lambda: token_for(role, number)


async def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether `condition` holds within `seconds` (checked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=Plan.connections)
    parser.add_argument("--rate", type=float, default=Plan.rate, help="events per second")
    parser.add_argument("--duration", type=float, default=Plan.duration, help="seconds of publishing")
    parser.add_argument("--events", type=int, default=Plan.events, help="events to publish, at most")
    parser.add_argument("--drain", type=float, default=Plan.drain, help="seconds to wait for stragglers")
    parser.add_argument("--role", default=Plan.role)
    parser.add_argument("--type", dest="event_type", default=Plan.event_type)
    parser.add_argument("--transport", choices=("websocket", "sse"), default=Plan.transport)
    parser.add_argument(
        "--outputs", type=Path, help="a deployed stack's outputs file (cdk deploy --outputs-file)"
    )
    parser.add_argument("--stack", help="the stack in --outputs, if it holds several")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_DIR, help="the local stack's (default)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    for name, limit in LIMITS.items():
        value = getattr(args, name)
        if not 0 < value <= limit:
            parser.error(f"--{name} is bounded: above 0, at most {limit:,}")
    if args.stack and not args.outputs:
        parser.error("--stack names a stack in --outputs")
    plan = Plan(
        args.connections, args.rate, args.duration, args.events, args.role, args.event_type,
        args.transport, args.drain,
    )  # fmt: skip
    return args, plan


def main(argv: Sequence[str] | None = None) -> int:
    args, plan = parse(argv)
    try:
        target, token_for = (
            deployed_target(args.outputs, args.stack) if args.outputs else local_target(args.state_dir)
        )
    except (NotLoopback, FileNotFoundError, ValueError, LookupError) as error:
        print(f"tools.load: {error}", file=sys.stderr)
        return 2
    try:
        figures = asyncio.run(run(target, token_for, plan))
    except TimeoutError as error:
        print(f"tools.load: {error}", file=sys.stderr)
        return 1
    finally:
        target.publisher.close()
    latency = figures["latency_ms"]
    print(
        f"{figures['target']}, {plan.transport}: {figures['connections']} connections, "
        f"{figures['events_published']} events at {figures['events_per_s']}/s, "
        f"{figures['deliveries']:,}/{figures['expected_deliveries']:,} delivered "
        f"({figures['deliveries_per_s']:,}/s)"
    )
    if latency:
        print(
            "publish-to-receive ms: " + ", ".join(f"{name} {value:,.1f}" for name, value in latency.items())
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["deliveries"] == figures["expected_deliveries"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
