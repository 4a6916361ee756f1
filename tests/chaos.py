"""A bounded chaos run against the local stack: subscribers of every role over both transports, their
connections cut at random (by the client, and over the WebSocket API also by the server through the
`@connections` API), while several publishers publish. Each subscriber follows docs/protocol.md's
resume rule (tests/resume.py); at the end every application must have every event of its types since
it started, exactly once and in seq order, and nothing else. Prints the figures.

    .venv/bin/python -m tests.chaos --state-dir .local         # against a running `make run`
    .venv/bin/python -m tests.chaos --subscribers 36 --events 2000

Traffic goes to loopback only; the run is bounded in events and time and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from botocore.credentials import Credentials

from clients.subscriber import SseReader
from local.gateway import STAGE
from local.publish import local_client
from local.state import LOCAL_STACK, LocalState
from local.token import issue
from stacks.config import load
from streaming import cursor as cursors
from streaming.management import ManagementApi
from tests.conftest import example
from tests.resume import Application

GAP_SECONDS = 1.0  # how long an event waits for its predecessor before the subscriber replays
PING_SECONDS = 2.0


@dataclass
class Subscriber:
    name: str
    role: str
    transport: str
    types: frozenset[str]
    streams: frozenset[str]
    app: Application = field(default_factory=Application)
    start: dict[str, int] | None = None
    target: dict[str, int] | None = None  # set when publishing is over: the last seq of its types
    connection_id: str | None = None
    connections: int = 0
    client_cuts: int = 0
    server_cuts: int = 0
    planned_ends: int = 0
    replays: int = 0
    gap_replays: int = 0
    foreign: int = 0  # events of types it did not ask for

    def done(self) -> bool:
        return self.target is not None and all(
            self.app.position.get(stream, 0) >= seq for stream, seq in self.target.items()
        )

    def receive(self, event: dict[str, Any]) -> None:
        if event["type"] not in self.types:
            self.foreign += 1
            return
        self.app.receive(event)


class Run:
    def __init__(self, state: LocalState, rng: random.Random, cut_rate: float) -> None:
        self.state = state
        self.rng = rng
        self.cut_rate = cut_rate  # cuts per connection per second
        endpoints = json.loads(state.endpoints_file.read_text())[LOCAL_STACK]
        self.ws_url = endpoints["WebSocketUrl"]
        self.sse_url = endpoints["SseUrl"] + "events"
        self.management = server_side(state)
        self.publishing = True

    def lifetime(self) -> float:
        return self.rng.expovariate(self.cut_rate)

    async def websocket(self, sub: Subscriber) -> None:
        while not sub.done():
            token = issue(self.state, sub.role, sub.name)
            try:
                async with websockets.connect(
                    self.ws_url, subprotocols=["streaming.v1", f"token.{token}"], open_timeout=10
                ) as ws:
                    sub.connections += 1
                    await self._websocket_session(sub, ws)
            except (websockets.ConnectionClosed, OSError, TimeoutError):
                pass
            sub.app.cut()
            await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    async def _websocket_session(self, sub: Subscriber, ws: Any) -> None:
        await ws.send(json.dumps({"action": "subscribe", "types": sorted(sub.types), "id": "s"}))
        cut_at = time.monotonic() + self.lifetime()
        server_cut = self.rng.random() < 0.5
        last_ping = last_replay = time.monotonic()
        scanned: dict[str, int] = {}

        async def replay(cursor: str) -> None:
            nonlocal last_replay
            sub.replays += 1
            last_replay = time.monotonic()
            await ws.send(json.dumps({"action": "replay", "cursor": cursor, "id": "r"}))

        while not sub.done():
            now = time.monotonic()
            if self.publishing and now >= cut_at:
                if server_cut and sub.connection_id:
                    sub.server_cuts += 1
                    await asyncio.to_thread(self.management.delete, sub.connection_id)
                else:
                    sub.client_cuts += 1
                    await ws.close()
                return
            if sub.app.waiting() > GAP_SECONDS and now - last_replay > GAP_SECONDS:
                sub.gap_replays += 1
                await replay(sub.app.cursor)
            if now - last_ping > PING_SECONDS:
                last_ping = now
                await ws.send(json.dumps({"action": "ping", "id": "p"}))
            try:
                async with asyncio.timeout(0.2):
                    message = json.loads(await ws.recv())
            except TimeoutError:
                continue
            kind = message.get("type")
            if kind == "welcome":
                sub.connection_id = message["connection_id"]
            elif kind == "subscribed":
                if sub.start is None:
                    sub.start = cursors.decode(message["cursor"])
                    sub.app.adopt(sub.start)
                await replay(sub.app.cursor)  # closes the window around the subscription
            elif kind == "events":
                for event in message["events"]:
                    sub.receive(event)
            elif kind == "replay":
                for stream, seq in cursors.decode(message["cursor"]).items():
                    scanned[stream] = max(scanned.get(stream, 0), seq)
                if message["more"]:
                    await replay(message["cursor"])
            elif kind == "pong" and any(
                # A head beyond what was processed and scanned: a lost last event, or other types.
                seq > max(sub.app.position.get(s, 0), scanned.get(s, 0))
                for s, seq in message["heads"].items()
                if s in sub.streams
            ):
                await replay(sub.app.cursor)

    async def sse(self, sub: Subscriber) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
            while not sub.done():
                token = issue(self.state, sub.role, sub.name)
                params = {"types": ",".join(sorted(sub.types)), "token": token}
                if sub.start is not None:
                    params["cursor"] = sub.app.cursor
                try:
                    async with client.stream("GET", self.sse_url, params=params) as response:
                        if response.status_code != 200:
                            await response.aread()
                            await asyncio.sleep(0.5)  # e.g. too_many_streams until old ones are gone
                            continue
                        sub.connections += 1
                        await self._sse_stream(sub, response)
                except (httpx.HTTPError, OSError):
                    pass
                sub.app.cut()
                await asyncio.sleep(self.rng.uniform(0.05, 0.3))

    async def _sse_stream(self, sub: Subscriber, response: httpx.Response) -> None:
        cut_at = time.monotonic() + self.lifetime()
        async with SseReader(response) as reader:
            while not sub.done():
                if self.publishing and time.monotonic() >= cut_at:
                    sub.client_cuts += 1
                    return
                if sub.app.waiting() > GAP_SECONDS:
                    return  # one ordered stream has no gap to wait for: start again from the position
                try:
                    message = await reader.next(0.2)
                except EOFError:
                    return
                if message is not None:
                    self._sse_message(sub, *message)

    def _sse_message(self, sub: Subscriber, event: str, data: str, event_id: str | None) -> None:
        if event == "end":
            sub.planned_ends += 1
        elif event not in ("heartbeat", "truncated"):
            sub.receive(json.loads(data))
        if event_id is not None:
            position = cursors.decode(event_id)
            if sub.start is None:
                sub.start = position
            sub.app.adopt(position)

    async def publish(self, count: int, types: list[str]) -> list[Any]:
        return await publish_at_random(self.state, self.rng, count, types, pause=0.02)


def server_side(state: LocalState) -> ManagementApi:
    """The local stack's `@connections` API, signed as the handlers sign: to cut connections."""
    websocket_url = json.loads(state.endpoints_file.read_text())[LOCAL_STACK]["WebSocketUrl"]
    management_url = websocket_url.replace("ws://", "http://").rstrip("/") + f"/{STAGE}"
    return ManagementApi(management_url, "us-east-1", Credentials("local", "local"))


async def publish_at_random(
    state: LocalState, rng: random.Random, count: int, types: list[str], *, pause: float
) -> list[Any]:
    """`count` events of random `types` in batches of 1 to 3, up to `pause` seconds apart; a contended
    publish is repeated with the same ids, as producers are told."""
    client, settings, results = local_client(state), load("dev").runtime_settings("unused"), []
    while count > 0:
        batch = [example(rng.choice(types), settings) for _ in range(min(count, rng.randint(1, 3)))]
        for attempt in range(20):
            try:
                results.append(await asyncio.to_thread(client.publish, batch))
                break
            except Exception:  # contended
                await asyncio.sleep(0.05 * (attempt + 1))
        count -= len(batch)
        await asyncio.sleep(rng.uniform(0, pause))
    return results


def expected_for(
    state: LocalState, start: dict[str, int] | None, role: str, types: Iterable[str]
) -> list[tuple[str, int]]:
    """Every event of `types` the role may see after `start`, from the store, in seq order per stream."""
    client = local_client(state)
    found: list[tuple[str, int]] = []
    cursor = cursors.encode(start or {})
    while True:
        page = client.events_after(cursor=cursor, types=sorted(types), role=role, limit=1000)
        found += [(e["stream"], e["seq"]) for e in page["events"]]
        if not page["more"]:
            return sorted(found)
        cursor = page["cursor"]


async def chaos(
    state: LocalState, *, subscribers: int, events: int, publishers: int, cut_rate: float, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    config = load("dev")
    run = Run(state, rng, cut_rate)
    subs = []
    for i in range(subscribers):
        role = sorted(config.roles)[i % len(config.roles)]
        allowed = sorted(config.roles[role])
        types = frozenset(rng.sample(allowed, rng.randint(1, len(allowed))))
        streams = frozenset(config.event_types[t] for t in types)
        subs.append(Subscriber(f"chaos-{i}", role, "websocket" if i % 3 else "sse", types, streams))
    tasks = [
        asyncio.create_task(run.websocket(s) if s.transport == "websocket" else run.sse(s)) for s in subs
    ]
    deadline = time.monotonic() + 60
    while any(s.start is None for s in subs) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    all_types = sorted(config.event_types)
    heads_before = local_client(state).streams()["streams"]
    started = time.monotonic()
    share = [events // publishers + (1 if i < events % publishers else 0) for i in range(publishers)]
    await asyncio.gather(*(run.publish(n, all_types) for n in share))
    publish_seconds = time.monotonic() - started
    run.publishing = False
    heads = local_client(state).streams()["streams"]
    for sub in subs:
        sub.target = expected_last(state, sub) if sub.start is not None else {}
    _, pending = await asyncio.wait(tasks, timeout=120)
    for task in pending:
        task.cancel()
    lost = duplicates = out_of_order = expected_total = delivered = 0
    for sub in subs:
        expected = expected_for(state, sub.start, sub.role, sub.types)
        got = [(e["stream"], e["seq"]) for e in sub.app.processed]
        expected_total += len(expected)
        delivered += len(got)
        lost += len(set(expected) - set(got))
        duplicates += len(got) - len(set(got))
        for stream in sub.streams:
            seqs = [seq for s, seq in got if s == stream]
            out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if a >= b)
    return {
        "seed": seed,
        "subscribers": len(subs),
        "websocket": sum(s.transport == "websocket" for s in subs),
        "sse": sum(s.transport == "sse" for s in subs),
        "events_published": sum(heads.values()) - sum(heads_before.values()),
        "publish_seconds": round(publish_seconds, 1),
        "expected_deliveries": expected_total,
        "delivered_to_applications": delivered,
        "lost": lost,
        "duplicates_at_application": duplicates,
        "out_of_order": out_of_order,
        "unauthorized_or_unasked": sum(s.foreign for s in subs),
        "repeats_suppressed": sum(s.app.repeats for s in subs),
        "connections": sum(s.connections for s in subs),
        "client_cuts": sum(s.client_cuts for s in subs),
        "server_cuts": sum(s.server_cuts for s in subs),
        "sse_planned_ends": sum(s.planned_ends for s in subs),
        "replays": sum(s.replays for s in subs),
        "gap_replays": sum(s.gap_replays for s in subs),
        "unfinished": len(pending),
    }


def expected_last(state: LocalState, sub: Subscriber) -> dict[str, int]:
    last: dict[str, int] = {}
    for stream, seq in expected_for(state, sub.start, sub.role, sub.types):
        last[stream] = max(last.get(stream, 0), seq)
    return last


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".local"))
    parser.add_argument("--subscribers", type=int, default=36)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--cut-rate", type=float, default=0.1, help="cuts per connection per second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    figures = asyncio.run(
        chaos(
            LocalState(args.state_dir),
            subscribers=args.subscribers,
            events=args.events,
            publishers=args.publishers,
            cut_rate=args.cut_rate,
            seed=args.seed,
        )
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
