"""The live tail of one SSE stream, pushed instead of polled: a WebSocket connection of the stream's own
to the stack's WebSocket API, opened with the subscriber's token and subscribed to the stream's types,
so the fan-out that serves WebSocket clients pushes the stream its events (the role filtering is the
WebSocket path's too). A `Relay` is the subscription's `LiveTail` (streaming.tail).

Memory starts at `subscribed.cursor` (every later event is pushed) and grows while each event's `prev`
(among the stream's types) is the last one held; an event whose `prev` is ahead restarts memory just
before it. A subscription whose position memory does not reach reads the store, as behind the tailer:
the cursor it resumed from, the seam between that read and the pushes, and any event lost on the way
are all covered by that one rule, and repeats are dropped by seq.

When the push path is unavailable (the connection refused, not subscribed within `READY_SECONDS`,
closed, or silent) the relay falls back, for the rest of the stream, to the process's polling tailer,
saying so in a log line and the `SsePushFallbacks` metric; the stream goes on from its position.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from streaming import codec
from streaming import cursor as cursors
from streaming.events import Envelope
from streaming.observability import count, logger
from streaming.tail import KEEP_PER_STREAM, LiveTail, from_memory

READY_SECONDS = 10.0  # to connect and subscribe; a relay that takes longer falls back
# A ping a minute, as the project's clients send: API Gateway closes a connection idle for 10 minutes,
# and the pong's heads are what heartbeats report. A dead connection is found sooner by the
# connection's own WebSocket pings (the factory's keepalive), which cost no route invocation.
PING_SECONDS = 60.0
SUBSCRIBE_ID = "relay"


class PushConnection(Protocol):
    """What the relay uses of a WebSocket client connection (websockets' ClientConnection)."""

    async def send(self, message: str) -> None: ...
    async def recv(self) -> str | bytes: ...


Connect = Callable[[], AbstractAsyncContextManager[PushConnection]]


class Refused(Exception):
    """The WebSocket API answered the subscription with an error."""


class Relay:
    """One stream's pushes, or, once they are unavailable, the shared `fallback` tailer. `fell_back`
    says why it polls (None while it relays)."""

    def __init__(
        self, connect: Connect, fallback: LiveTail, types: frozenset[str], *, patience: float = READY_SECONDS
    ) -> None:
        """`patience`: how long the stream waits for the subscription before it goes on without it (its
        first events then come from the store, and its first heartbeat's heads from `welcome` at most):
        less than its stall limit, so that waiting is not taken for a stall."""
        self._connect, self._fallback, self._types = connect, fallback, types
        self._patience = min(patience, READY_SECONDS)
        self._since: cursors.Position = {}  # memory holds every event of its types after this seq
        self._recent: dict[str, deque[Envelope]] = {}
        self._heads: cursors.Position = {}  # from welcome, subscribed and pong: all types
        self._early: list[Envelope] = []  # pushed before `subscribed`, which may come after them
        self._ready = asyncio.Event()  # subscribed, or fallen back
        self._changed = asyncio.Event()  # set, and replaced, whenever memory grows or it falls back
        self._task: asyncio.Task[None] | None = None
        self.fell_back: str | None = None
        self.pushed = 0  # events received
        self.pongs = 0

    async def watch(self, streams: frozenset[str]) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._patience):
                    await self._ready.wait()
        if self.fell_back:
            await self._fallback.watch(streams)

    async def heads(self, streams: frozenset[str] = frozenset()) -> cursors.Position:
        if self.fell_back:
            return await self._fallback.heads(streams)
        known = self._heads.keys() | self._since.keys()
        return {stream: max(self._heads.get(stream, 0), self._last(stream)) for stream in known}

    def fresh(self, within: float) -> bool:
        """A live connection is checked by its pings: one that stops answering falls back."""
        return self._fallback.fresh(within) if self.fell_back else True

    def recover(self, stale_after: float) -> bool:
        return self._fallback.recover(stale_after) if self.fell_back else False

    def recent_after(
        self, position: cursors.Position, types: frozenset[str], streams: Iterable[str]
    ) -> tuple[list[Envelope], cursors.Position] | None:
        if self.fell_back:
            return self._fallback.recent_after(position, types, streams)
        self._forget_delivered(position)
        # Not up to the heads: memory holds only the stream's types, and a position never passes an
        # event of them it has not delivered.
        return from_memory(self._since, self._recent, {}, position, types & self._types, streams)

    async def wait_beyond(self, position: cursors.Position, streams: frozenset[str], timeout: float) -> None:
        if self.fell_back:
            await self._fallback.wait_beyond(position, streams, timeout)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.fell_back:
                    if any(self._last(stream) > position.get(stream, 0) for stream in streams):
                        return
                    await self._changed.wait()
        # Fallen back meanwhile: the subscription asks again, and is answered by the fallback.

    def close(self) -> None:
        """Close the connection (the stream has ended)."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        try:
            async with asyncio.timeout(READY_SECONDS) as ready_by, self._connect() as connection:
                try:
                    await self._relay(connection, ready_by)
                except Exception as error:  # said before the close handshake, which a dead peer never answers
                    self._fall_back("refused" if isinstance(error, Refused) else "closed", error)
        except TimeoutError:
            self._fall_back("not subscribed in time")
        except Exception as error:
            self._fall_back("unreachable", error)

    async def _relay(self, connection: PushConnection, ready_by: asyncio.Timeout) -> None:
        subscribe = {"action": "subscribe", "types": sorted(self._types), "id": SUBSCRIBE_ID}
        await connection.send(codec.dumps(subscribe))
        while True:
            try:
                async with asyncio.timeout(PING_SECONDS):
                    message = await connection.recv()
            except TimeoutError:
                await connection.send(codec.dumps({"action": "ping"}))
                continue
            self._take(json.loads(message))
            if self._ready.is_set():  # subscribed: no deadline from now on
                ready_by.reschedule(None)

    def _take(self, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        if kind == "events":
            for body in message["events"]:
                self.pushed += 1
                self._add(_envelope(body))
        elif kind in ("welcome", "pong"):
            self.pongs += kind == "pong"
            self._merge_heads(message["heads"])
        elif kind == "subscribed":
            cursor = cursors.decode(message["cursor"])
            self._merge_heads(cursor)
            for stream, seq in cursor.items():
                self._since[stream], self._recent[stream] = seq, deque(maxlen=KEEP_PER_STREAM)
            early, self._early = self._early, []
            for event in early:
                self._add(event)
            self._ready.set()
            self._notify()  # a stream that stopped waiting for this reads what it missed now
        elif kind == "error" and message.get("id") == SUBSCRIBE_ID:
            raise Refused(message.get("code"))
        # Anything else (a `reconnect` notice: the stream ends with its token anyway) asks for nothing.

    def _add(self, event: Envelope) -> None:
        stream = event.stream
        if stream not in self._since:
            self._early.append(event)
            return
        recent, last = self._recent[stream], self._last(stream)
        if event.seq <= last:
            return  # a repeat
        if event.prev > last:  # one before it is on its way or lost: the store has it
            self._since[stream], recent = event.prev, deque(maxlen=KEEP_PER_STREAM)
            self._recent[stream] = recent
        recent.append(event)
        if len(recent) == recent.maxlen:
            self._since[stream] = max(self._since[stream], recent[0].seq - 1)
        self._notify()

    def _forget_delivered(self, position: cursors.Position) -> None:
        """Memory serves one stream, which never goes back: what it has delivered can go."""
        for stream, recent in self._recent.items():
            after = position.get(stream, 0)
            if self._since[stream] <= after:
                while recent and recent[0].seq <= after:
                    self._since[stream] = recent.popleft().seq

    def _last(self, stream: str) -> int:
        recent = self._recent.get(stream)
        return recent[-1].seq if recent else self._since.get(stream, 0)

    def _merge_heads(self, heads: Mapping[str, int]) -> None:
        for stream, seq in heads.items():
            self._heads[stream] = max(self._heads.get(stream, 0), seq)

    def _fall_back(self, reason: str, error: BaseException | None = None) -> None:
        if self.fell_back:
            return
        self.fell_back = reason
        extra = {"reason": reason, "error": type(error).__name__ if error else None}
        logger.warning("sse push unavailable; the stream polls the store", extra=extra)
        count("SsePushFallbacks", reason=reason)
        self._ready.set()
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _envelope(body: Mapping[str, Any]) -> Envelope:
    """A pushed event: its `prev` is already among the stream's types (the connection's), so it needs
    no `type_heads` to be delivered with the same `prev` over SSE."""
    event = codec.decode_event(body)
    return Envelope(
        id=event["id"],
        type=event["type"],
        stream=event["stream"],
        seq=event["seq"],
        prev=event["prev"],
        ts=event["ts"],
        schema_version=event["schema_version"],
        data=event["data"],
        producer=event["producer"],
        key=event.get("key"),
        type_heads={},
        coalesced=event.get("coalesced", 0),
    )
