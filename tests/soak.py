"""The soak run (docs/reliability.md, "Soak"): the local stack for a long while under connection churn on
both transports and steady publishing, watched every few seconds: the memory (RSS), file descriptors
and sockets of each of its processes (/proc), their asyncio tasks, threads and open connections (the
local-only `GET /local/debug` of each process), and the connection records and SSE leases in the
connections table.

It warms the stack up first, lets the warm-up's subscribers leave and takes that idle state as the
baseline; then churns for the given time; then lets every subscriber leave and waits for the stack to
settle. It judges (`judge`) that memory, descriptors and tasks stayed bounded while churning (the last
third of the samples against the first) and that tasks, sockets, connections and records came back to
the baseline afterwards; prints a summary (JSON), writes the samples (CSV) and a plot (PNG), and exits
1 on a leak.

    .venv/bin/python -m tests.soak --minutes 10        # make soak (MINUTES=10)

Traffic goes to loopback only; the run is bounded in time and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from clients.backoff import Backoff
from clients.subscriber import Endpoints, Subscriber, SubscriberFailed
from local.aws import moto_client
from local.publish import local_client
from local.serving import DEBUG_PATH
from local.state import LocalState
from local.token import issue
from stacks.config import load
from tests.chaos import publish_at_random
from tests.integration.conftest import outputs, running_local_stack
from tests.network import CuttingProxy

PROCESSES = ("main", "gateway")  # `make run` (moto, publish, SSE, Lambda Invoke, live page) and the gateway
MEAN_LIFETIME_SECONDS = 8.0  # of one subscriber's connection, exponentially distributed
PUBLISH_PAUSE_SECONDS = 1.0  # batches of 1 to 3 events, up to this apart: about 3 events a second

# What "bounded" allows. Growth is the median of the last third of the samples less that of the first.
RSS_TOLERANCE_MB = 8.0  # allocator noise: the arenas of a busier moment are not given back at once
# The main process keeps every event twice: moto keeps the events table in memory and expires nothing
# (DynamoDB's TTL deletes items when deployed), 19.3 KB an event through the running stack (18.6 in
# moto alone, 3 x 1,000 events); the SSE tail keeps the latest 1,000 of each stream (streaming.tail,
# 5.3 KB an event). Allowed: 30 KB for every event stored between the thirds (the tail's share is
# bounded, but a 10-minute run does not reach its bound).
STORE_KB_PER_EVENT = 30.0
DESCRIPTOR_TOLERANCE = 12  # fds and sockets while churning: subscribers come and go between samples
TASK_TOLERANCE = 12
# After the subscribers have left: idle again, give or take the pooled keep-alive connections of the
# functions' AWS clients and of this harness.
SETTLED_SOCKETS = 6
SETTLED_TASKS = 2


@dataclass
class Churn:
    """Subscribers of every role on both transports, each connecting, subscribing, receiving for a
    random while and leaving, cleanly (a close) or abruptly (its connection aborted by a proxy)."""

    state: LocalState
    rng: random.Random
    sessions: Counter[str] = field(default_factory=Counter)  # "websocket clean", "sse abrupt", ...
    received: int = 0
    failed: int = 0
    live: int = 0

    async def run(self, slots: int, seconds: float) -> None:
        roles = load("dev").roles
        names = sorted(roles)
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(
                self._slot(i, names[i % len(names)], roles[names[i % len(names)]], deadline)
                for i in range(slots)
            )
        )

    async def _slot(self, index: int, role: str, allowed: Sequence[str], deadline: float) -> None:
        subject = f"soak-{index}"
        transport = ("websocket", "sse")[index // 4 % 2]  # every role on both transports
        while (left := deadline - time.monotonic()) > 0:
            types = self.rng.sample(sorted(allowed), self.rng.randint(1, len(allowed)))
            lifetime = min(left, self.rng.expovariate(1 / MEAN_LIFETIME_SECONDS))
            abrupt = self.rng.random() < 0.5
            await self._session(subject, role, transport, types, lifetime, abrupt)
            self.sessions[f"{transport} {'abrupt' if abrupt else 'clean'}"] += 1
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))

    async def _session(
        self, subject: str, role: str, transport: str, types: list[str], lifetime: float, abrupt: bool
    ) -> None:
        url = outputs(self.state)["WebSocketUrl" if transport == "websocket" else "SseUrl"]
        target = urlsplit(url).port
        async with contextlib.AsyncExitStack() as stack:
            port = target
            if abrupt:  # through a proxy of its own, which aborts its connection at the end
                proxy = await stack.enter_async_context(CuttingProxy(target).running())
                port = proxy.port
            where = Endpoints(f"ws://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/events")
            subscriber = Subscriber(
                where,
                lambda: asyncio.to_thread(issue, self.state, role, subject),
                types,
                transport=transport,
                backoff=Backoff(max_attempts=5),
            )
            self.live += 1
            try:
                async with subscriber:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(lifetime):
                            async for _ in subscriber:
                                self.received += 1
                    if abrupt:
                        while proxy.cut(self.rng):  # no close frame, no end of stream: gone
                            pass
            except SubscriberFailed:
                self.failed += 1
            finally:
                self.live -= 1


class Watch:
    """One sample of everything watched: a row of the CSV."""

    def __init__(self, state: LocalState) -> None:
        endpoints = outputs(state)
        gateway = endpoints["WebSocketUrl"].replace("ws://", "http://").rstrip("/")
        live_page = endpoints["MetricsUrl"].rsplit("/", 1)[0]
        self.debug_urls = {"main": live_page + DEBUG_PATH, "gateway": gateway + DEBUG_PATH}
        self.table = endpoints["ConnectionsTableName"]
        self.dynamodb = moto_client("dynamodb", endpoints["AwsEndpointUrl"])
        self.state = state
        # No connection of its own kept open between samples, so what they count is the stack's.
        self.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))
        self.started = time.monotonic()

    async def sample(self, phase: str, churn: Churn | None = None) -> dict[str, Any]:
        row: dict[str, Any] = {"seconds": round(time.monotonic() - self.started, 1), "phase": phase}
        for name, url in self.debug_urls.items():
            report = (await self.http.get(url)).json()
            row |= {f"{name}_{key}": value for key, value in report.items() if key != "pid"}
            row |= {f"{name}_{key}": value for key, value in process_figures(report["pid"]).items()}
        row |= await asyncio.to_thread(self._records)
        row["events_stored"] = await asyncio.to_thread(self._events_stored)
        row["subscribers"] = churn.live if churn else 0
        return row

    def _events_stored(self) -> int:
        with contextlib.closing(local_client(self.state)) as publisher:
            return sum(publisher.streams()["streams"].values())

    def _records(self) -> dict[str, int]:
        counted = Counter(dict.fromkeys(RECORDS, 0))
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=self.table):
            counted.update(record_kind(item["pk"]["S"]) for item in page["Items"])
        counted.pop("stats", None)
        return dict(counted)


RECORD_KINDS = {"connection": "ws_connections", "type": "ws_subscriptions", "expiry": "ws_expiry"}
RECORDS = (*RECORD_KINDS.values(), "sse_leases", "sse_streams")  # every one the subscribers leave


def record_kind(pk: str) -> str:
    """The connections table's kinds of item (streaming.connections, streaming.leases, streaming.stats)."""
    if pk == "sse":
        return "sse_streams"
    prefix = pk.split("#", 1)[0]
    return "sse_leases" if prefix == "sse" else RECORD_KINDS.get(prefix, prefix)


def records(row: dict[str, Any]) -> int:
    return sum(row[kind] for kind in RECORDS)


def process_figures(pid: int) -> dict[str, float]:
    """Resident memory (MB), open file descriptors and, of those, sockets."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fds = sockets = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed since the listing
            sockets += os.readlink(fd).startswith("socket:")
            fds += 1
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": fds, "sockets": sockets}


# -- judging -------------------------------------------------------------------------------------


def judge(
    churning: Sequence[dict[str, Any]], baseline: dict[str, Any], settled: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Figures, and the leaks they show: growth while churning beyond its tolerance, or what did not
    come back to the baseline once the subscribers had left."""
    third = max(1, len(churning) // 3)
    first, last = churning[:third], churning[-third:]

    def growth(column: str) -> float:
        return round(median(last, column) - median(first, column), 1)

    stored = growth("events_stored")
    figures: dict[str, Any] = {"samples": len(churning), "events_stored_between_thirds": stored}
    leaks = []
    for process in PROCESSES:
        allowed = RSS_TOLERANCE_MB + (STORE_KB_PER_EVENT * stored / 1024 if process == "main" else 0)
        rss = {
            "first_third_mb": median(first, f"{process}_rss_mb"),
            "last_third_mb": median(last, f"{process}_rss_mb"),
            "growth_mb": growth(f"{process}_rss_mb"),
            "allowed_mb": round(allowed, 1),
            "max_mb": max(row[f"{process}_rss_mb"] for row in churning),
        }
        figures[process] = {"rss": rss}
        if rss["growth_mb"] > allowed:
            leaks.append(f"{process}: RSS grew {rss['growth_mb']} MB while churning (allowed {allowed:.1f})")
        for column, tolerance in (
            ("fds", DESCRIPTOR_TOLERANCE),
            ("sockets", DESCRIPTOR_TOLERANCE),
            ("tasks", TASK_TOLERANCE),
        ):
            grown = growth(f"{process}_{column}")
            figures[process][f"{column}_growth"] = grown
            if grown > tolerance:
                leaks.append(f"{process}: {column} grew by {grown} while churning (allowed {tolerance})")
        for column, tolerance in (("sockets", SETTLED_SOCKETS), ("tasks", SETTLED_TASKS), ("connections", 0)):
            before, after = baseline[f"{process}_{column}"], settled[f"{process}_{column}"]
            figures[process][column] = {"baseline": before, "settled": after}
            if after > before + tolerance:
                leaks.append(
                    f"{process}: {after} {column} once idle again, {before} before (allowed +{tolerance})"
                )
    for column in ("gateway_websockets", "gateway_invocations"):
        if settled[column]:
            leaks.append(f"{column} {settled[column]} once idle again")
    figures["records_settled"] = {
        kind: settled[kind] for kind in (*RECORD_KINDS.values(), "sse_streams", "sse_leases")
    }
    if records(settled):
        leaks.append(f"connection records left once idle again: {figures['records_settled']}")
    return figures, leaks


def median(rows: Sequence[dict[str, Any]], column: str) -> float:
    return round(float(statistics.median(row[column] for row in rows)), 1)


# -- the run -------------------------------------------------------------------------------------

SETTLE_SECONDS = 120.0  # for the subscribers' connections, leases and records to be gone
SWEEP_SECONDS = 5.0  # the local sweeper's period (local/__main__.py)


@dataclass
class Report:
    rows: list[dict[str, Any]]
    figures: dict[str, Any]
    leaks: list[str]


async def soak(
    state: LocalState, *, seconds: float, warmup_seconds: float, interval: float, subscribers: int, seed: int
) -> Report:
    rng = random.Random(seed)
    watch = Watch(state)
    rows: list[dict[str, Any]] = []
    event_types = sorted(load("dev").event_types)

    async def churn(phase: str, seconds: float) -> Churn:
        churn = Churn(state, rng)
        publishing = asyncio.create_task(
            publish_at_random(state, rng, sys.maxsize, event_types, pause=PUBLISH_PAUSE_SECONDS)
        )
        churning = asyncio.create_task(churn.run(subscribers, seconds))
        while not churning.done():
            rows.append(await watch.sample(phase, churn))
            await asyncio.wait({churning}, timeout=interval)
        publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        churning.result()
        return churn

    async def settle(phase: str, baseline: dict[str, Any] | None = None) -> dict[str, Any]:
        """Samples until the subscribers' traces are gone (and, given a baseline, the processes are
        back to it), or SETTLE_SECONDS have passed: the judgement then says what is left."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            gc.collect()  # whatever the harness dropped closes its connections before they are counted
            rows.append(row := await watch.sample(phase))
            if (idle(row) and (baseline is None or at(row, baseline))) or time.monotonic() > deadline:
                return row
            await asyncio.sleep(interval)

    await churn("warm-up", warmup_seconds)
    await settle("idle")
    await asyncio.sleep(SWEEP_SECONDS)  # what is let go after the last record went
    rows.append(baseline := await watch.sample("idle"))
    churned = await churn("churn", seconds)
    settled = await settle("drain", baseline)
    figures, leaks = judge([row for row in rows if row["phase"] == "churn"], baseline, settled)
    stored = [row["events_stored"] for row in rows if row["phase"] == "churn"]
    figures = {
        "churn_seconds": round(seconds),
        "subscribers_at_once": subscribers,
        "sessions": dict(sorted(churned.sessions.items())),
        "events_published": stored[-1] - stored[0],
        "events_received": churned.received,
        "subscribers_failed": churned.failed,
        **figures,
        "leaks": leaks,
    }
    await watch.http.aclose()
    return Report(rows, figures, leaks)


def idle(row: dict[str, Any]) -> bool:
    return not (records(row) or row["gateway_websockets"] or row["gateway_invocations"])


def at(row: dict[str, Any], baseline: dict[str, Any]) -> bool:
    return all(
        row[f"{process}_{column}"] <= baseline[f"{process}_{column}"] + tolerance
        for process in PROCESSES
        for column, tolerance in (("sockets", SETTLED_SOCKETS), ("tasks", SETTLED_TASKS), ("connections", 0))
    )


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns, restval=0)
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """RSS, descriptors and tasks of each process over the run, its phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [row["seconds"] / 60 for row in rows]
    figure, (rss, descriptors, tasks) = plt.subplots(3, 1, sharex=True, figsize=(10, 9))
    for process, colour in zip(PROCESSES, ("tab:blue", "tab:orange"), strict=True):
        rss.plot(minutes, column(rows, f"{process}_rss_mb"), colour, label=f"{process} process")
        descriptors.plot(minutes, column(rows, f"{process}_fds"), colour, label=f"{process}: fds")
        descriptors.plot(
            minutes, column(rows, f"{process}_sockets"), colour, ls="--", label=f"{process}: sockets"
        )
        tasks.plot(minutes, column(rows, f"{process}_tasks"), colour, label=f"{process}: asyncio tasks")
    tasks.plot(minutes, [records(row) for row in rows], "tab:green", label="connection records and leases")
    tasks.plot(minutes, column(rows, "subscribers"), "tab:gray", ls=":", label="subscribers connected")
    for axes, label in ((rss, "RSS (MB)"), (descriptors, "open"), (tasks, "count")):
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8, ncols=2)
        for start, end, phase in phases(rows):
            axes.axvspan(start / 60, end / 60, color=PHASE_COLOURS[phase], alpha=0.08, lw=0)
    tasks.set_xlabel("minutes (shaded: warm-up, churn, drain)")
    rss.set_title("Soak: the local stack's processes under connection churn and steady publishing")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


PHASE_COLOURS = {"warm-up": "tab:purple", "idle": "white", "churn": "tab:red", "drain": "tab:green"}


def column(rows: Sequence[dict[str, Any]], name: str) -> list[float]:
    return [row[name] for row in rows]


def phases(rows: Sequence[dict[str, Any]]) -> Iterator[tuple[float, float, str]]:
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["phase"] != rows[start]["phase"]:
            yield rows[start]["seconds"], rows[i - 1]["seconds"], rows[start]["phase"]
            start = i


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="of churn, after the warm-up")
    parser.add_argument("--warmup-minutes", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--subscribers", type=int, default=16, help="connected at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=Path("docs/images/soak.csv"))
    parser.add_argument("--plot", type=Path, default=Path("docs/images/soak-rss.png"))
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as directory,
        running_local_stack(Path(directory)) as state,
    ):
        report = asyncio.run(
            soak(
                state,
                seconds=args.minutes * 60,
                warmup_seconds=args.warmup_minutes * 60,
                interval=args.interval,
                subscribers=args.subscribers,
                seed=args.seed,
            )
        )
    write_csv(report.rows, args.csv)
    plot(report.rows, args.plot)
    print(json.dumps(report.figures, indent=2))
    sys.exit(1 if report.leaks else 0)


if __name__ == "__main__":
    main()
