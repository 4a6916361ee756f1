"""The chaos run: subscribers of every role over both transports, each one an application behind the
real subscriber library (clients/subscriber.py), their connections cut at random while several
publishers publish events of every type. About `cut_rate` of the live connections are cut each
second, by the client (its TCP connection aborted by a CuttingProxy: no close frame, no `end`) or, for
a WebSocket, by the server (`@connections` DELETE); SSE streams also end as planned when the stack
runs with a short `--sse-max-stream-seconds`. Then each application is judged by what it received
against the store: every event its role and types allow since it started, exactly once and in seq
order per stream, and nothing else. Prints the figures as one JSON line.

    .venv/bin/python -m tests.chaos --state-dir .local     # against a running `make run`
    .venv/bin/python -m tests.chaos --subscribers 100 --events 20000

Exit status 1 when a guarantee was broken. Traffic goes to loopback only; the run is bounded in
events and time and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.credentials import Credentials

from clients.backoff import Backoff
from clients.subscriber import Endpoints, Subscriber
from local.gateway import STAGE
from local.publish import local_client
from local.state import LOCAL_STACK, LocalState
from local.token import issue
from stacks.config import load
from streaming import cursor as cursors
from streaming.management import ManagementApi
from tests.conftest import example
from tests.integration.conftest import connection_ids, outputs, until
from tests.network import CuttingProxy

TRANSPORTS = ("websocket", "sse")
SERVER_SHARE = 0.5  # of the cuts of WebSocket connections, those made by the server
CATCH_UP_SECONDS = 180  # after the last publish, the most the applications are waited for
GUARANTEES = ("lost", "duplicates", "out_of_order", "unauthorized", "unexpected")


@dataclass
class Receiver:
    """One subscriber and the application behind it: what the application received, in order."""

    role: str
    transport: str
    types: frozenset[str]  # asked for; a WebSocket subscriber may ask for more than its role allows
    subscriber: Subscriber
    received: list[dict[str, Any]] = field(default_factory=list)

    async def consume(self) -> None:
        async for event in self.subscriber:
            self.received.append(event)


class Cutter:
    """Cuts about `rate` of the live connections per second, each at random by the client or, for a
    WebSocket connection, by the server."""

    def __init__(
        self, state: LocalState, proxies: dict[str, CuttingProxy], rng: random.Random, rate: float
    ) -> None:
        self.state, self.proxies, self.rng, self.rate = state, proxies, rng, rate
        self.by_client = self.by_server = 0

    async def run(self, stop: asyncio.Event) -> None:
        management = server_side(self.state)
        due = asyncio.get_running_loop().time()
        while not stop.is_set():
            live = {transport: proxy.live for transport, proxy in self.proxies.items()}
            # Due at times of a Poisson process, however long the cuts themselves take.
            due += self.rng.expovariate(self.rate * max(1, sum(live.values())))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await stop.wait()
            if stop.is_set() or not any(live.values()):
                continue
            transport = self.rng.choices(list(live), weights=list(live.values()))[0]
            if transport == "websocket" and self.rng.random() < SERVER_SHARE:
                if ids := await asyncio.to_thread(connection_ids, self.state):
                    await asyncio.to_thread(management.delete, self.rng.choice(ids))
                    self.by_server += 1
            elif self.proxies[transport].cut(self.rng):
                self.by_client += 1


def server_side(state: LocalState) -> ManagementApi:
    """The local stack's `@connections` API, signed as the handlers sign: to cut connections."""
    websocket_url = json.loads(state.endpoints_file.read_text())[LOCAL_STACK]["WebSocketUrl"]
    management_url = websocket_url.replace("ws://", "http://").rstrip("/") + f"/{STAGE}"
    return ManagementApi(management_url, "us-east-1", Credentials("local", "local"))


async def publish_at_random(
    state: LocalState, rng: random.Random, count: int, types: list[str], *, pause: float, batch: int = 3
) -> list[Any]:
    """`count` events of random `types` in batches of 1 to `batch`, up to `pause` seconds apart; a
    contended publish is repeated with the same ids, as producers are told."""
    settings, results = load("dev").runtime_settings("unused"), []
    with contextlib.closing(local_client(state)) as client:
        while count > 0:
            size = min(count, rng.randint(1, batch))
            events = [example(rng.choice(types), settings) for _ in range(size)]
            for attempt in range(20):
                try:
                    results.append(await asyncio.to_thread(client.publish, events))
                    break
                except Exception:  # contended
                    await asyncio.sleep(0.05 * (attempt + 1))
            count -= len(events)
            await asyncio.sleep(rng.uniform(0, pause))
    return results


def stored_after(state: LocalState, start: dict[str, int]) -> list[dict[str, Any]]:
    """Every event after `start` in the store, in seq order per stream."""
    found: list[dict[str, Any]] = []
    cursor = cursors.encode(start)
    with contextlib.closing(local_client(state)) as client:
        while True:
            page = client.events_after(cursor=cursor, limit=1000)
            found += page["events"]
            if not page["more"]:
                return sorted(found, key=lambda event: (event["stream"], event["seq"]))
            cursor = page["cursor"]


def receivers(state: LocalState, endpoints: Endpoints, count: int, rng: random.Random) -> list[Receiver]:
    """`count` subscribers, the roles and transports in turn; each of a subject of its own (the SSE cap
    is per subject) and a random choice of its role's types; every other WebSocket subscriber of a role
    that does not see every type also asks for one it may not see."""
    config = load("dev")
    made = []
    combinations = itertools.cycle(itertools.product(sorted(config.roles), TRANSPORTS))
    for i, (role, transport) in zip(range(count), combinations, strict=False):
        allowed = sorted(config.roles[role])
        types = set(rng.sample(allowed, rng.randint(1, len(allowed))))
        forbidden = sorted(set(config.event_types) - set(allowed))
        if transport == "websocket" and forbidden and i % 4 < 2:
            types.add(rng.choice(forbidden))
        subscriber = Subscriber(
            endpoints,
            lambda role=role, subject=f"chaos-{i}": issue(state, role, subject),  # type: ignore[misc]
            types,
            transport=transport,
            # Reconnect at once and without giving up: the cuts are the test, not the backoff.
            backoff=Backoff(base_seconds=0.05, cap_seconds=1, stable_seconds=1, max_attempts=1000),
            ping_seconds=10,
        )
        made.append(Receiver(role, transport, frozenset(types), subscriber))
    return made


async def chaos(
    state: LocalState,
    *,
    subscribers: int = 52,
    events: int = 5000,
    publishers: int = 4,
    batch: int = 20,
    cut_rate: float = 0.1,
    seed: int = 1,
) -> dict[str, Any]:
    """The run; its figures (see `judge`)."""
    rng, config, urls, began = random.Random(seed), load("dev"), outputs(state), time.monotonic()
    seconds: dict[str, float] = {}
    async with (
        CuttingProxy(port(urls["WebSocketUrl"])).running() as ws_proxy,
        CuttingProxy(port(urls["SseUrl"])).running() as sse_proxy,
    ):
        endpoints = Endpoints(f"ws://127.0.0.1:{ws_proxy.port}/", f"http://127.0.0.1:{sse_proxy.port}/events")
        subs = receivers(state, endpoints, subscribers, rng)
        for receiver in subs:
            await receiver.subscriber.__aenter__()
        consumers = [asyncio.create_task(receiver.consume()) for receiver in subs]
        try:
            await until(lambda: all(r.subscriber.started for r in subs), 120)
            start = local_client(state).streams()["streams"]
            seconds["start"] = time.monotonic() - began
            cutter, stop = (
                Cutter(state, {"websocket": ws_proxy, "sse": sse_proxy}, rng, cut_rate),
                asyncio.Event(),
            )
            cutting = asyncio.create_task(cutter.run(stop))
            share = [events // publishers + (i < events % publishers) for i in range(publishers)]
            types = sorted(config.event_types)
            await asyncio.gather(
                *(publish_at_random(state, rng, n, types, pause=0.05, batch=batch) for n in share)
            )
            seconds["publish"] = time.monotonic() - began - seconds["start"]
            stop.set()
            await cutting
            stored = stored_after(state, start)
            expected = {id(r): owed(stored, r.role, r.types) for r in subs}
            # Not asserted here: what is still missing after the bound shows in the figures as lost.
            await until(
                lambda: all(len(r.received) >= len(expected[id(r)]) for r in subs),
                CATCH_UP_SECONDS,
                strict=False,
            )
            seconds["catch_up"] = time.monotonic() - began - seconds["start"] - seconds["publish"]
        finally:
            for task in consumers:
                task.cancel()
            for receiver in subs:
                await receiver.subscriber.close()
    figures = judge(subs, expected, len(stored))
    cuts = {
        "by_client": cutter.by_client,
        "by_server": cutter.by_server,
        "sse_planned_ends": sum(r.subscriber.planned_reconnects for r in subs if r.transport == "sse"),
    }
    # While publishing: what share of the subscribers' connections was cut each second.
    rate = sum(cuts.values()) / (len(subs) * seconds["publish"])
    figures["cuts"] = {**cuts, "per_connection_second": round(rate, 3)}
    figures["seconds"] = {
        name: round(value, 1) for name, value in {**seconds, "total": time.monotonic() - began}.items()
    }
    figures["seed"] = seed
    return figures


def owed(stored: list[dict[str, Any]], role: str, types: frozenset[str]) -> list[tuple[str, int]]:
    """What the application may and must get: the stored events of the types it asked for that its
    role sees (by cdk.json's matrix, not the server's)."""
    allowed = types & frozenset(load("dev").roles[role])
    return [(event["stream"], event["seq"]) for event in stored if event["type"] in allowed]


def judge(subs: list[Receiver], expected: dict[int, list[tuple[str, int]]], events: int) -> dict[str, Any]:
    """What the applications received against what they were owed, summed over the subscribers."""
    roles = load("dev").roles
    figures = dict.fromkeys(
        ("expected", "delivered", *GUARANTEES, "duplicates_suppressed", "connections", "gaps_repaired"), 0
    )
    for receiver in subs:
        got = [(event["stream"], event["seq"]) for event in receiver.received]
        want = expected[id(receiver)]
        figures["expected"] += len(want)
        figures["delivered"] += len(got)
        figures["lost"] += len(set(want) - set(got))
        figures["unexpected"] += len(set(got) - set(want))
        figures["duplicates"] += len(got) - len(set(got))
        figures["unauthorized"] += sum(e["type"] not in roles[receiver.role] for e in receiver.received)
        for stream in {stream for stream, _ in got}:
            seqs = [seq for s, seq in got if s == stream]
            figures["out_of_order"] += sum(1 for a, b in itertools.pairwise(seqs) if a >= b)
        figures["duplicates_suppressed"] += receiver.subscriber.ordering.repeats
        figures["connections"] += receiver.subscriber.connections
        figures["gaps_repaired"] += receiver.subscriber.gap_replays
    return {
        "events": events,
        "subscribers": {t: sum(r.transport == t for r in subs) for t in TRANSPORTS},
        "roles": sorted({r.role for r in subs}),
        "deliveries": {"expected": figures.pop("expected"), "delivered": figures.pop("delivered")},
        # Every connection after a subscriber's first resumes by replaying from its position.
        "replays": figures["connections"] - len(subs),
        **figures,
    }


def broken(figures: dict[str, Any]) -> list[str]:
    """The guarantees the run broke (none, if it passed)."""
    deliveries = figures["deliveries"]
    return [name for name in GUARANTEES if figures[name]] + (
        ["delivered != expected"] if deliveries["delivered"] != deliveries["expected"] else []
    )


# As a pytest plugin (tests/conftest.py): the figures a test records with `record_property(FIGURES,
# ...)`, printed at the end of the run, also under xdist, whose workers' output is not shown.
FIGURES = "chaos_figures"
_recorded: list[object] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _recorded.extend(value for name, value in report.user_properties if name == FIGURES)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for figures in _recorded:
        terminalreporter.write_line(f"chaos: {json.dumps(figures)}")


def port(url: str) -> int:
    return urlsplit(url).port  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".local"))
    parser.add_argument("--subscribers", type=int, default=52)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=20, help="the most events in one publish request")
    parser.add_argument("--cut-rate", type=float, default=0.1, help="cuts per live connection per second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    figures = asyncio.run(
        chaos(
            LocalState(args.state_dir),
            subscribers=args.subscribers,
            events=args.events,
            publishers=args.publishers,
            batch=args.batch,
            cut_rate=args.cut_rate,
            seed=args.seed,
        )
    )
    print(json.dumps(figures))
    if failures := broken(figures):
        print(f"chaos: broken: {', '.join(failures)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
