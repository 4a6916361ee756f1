"""Subscribe to the stack's events with the delivery guarantee kept for you: every event your role and
types allow, exactly once and in seq order per stream, across any disconnect (docs/protocol.md).

    endpoints = Endpoints.from_file(".local/endpoints.json")
    async with Subscriber(endpoints, get_token, types={"signal.created"}) as subscriber:
        async for event in subscriber:
            ...

WebSocket first; SSE when the WebSocket cannot connect (`transport="auto"`), or always
(`transport="sse"`). Reconnects with exponential backoff and full jitter; asks `tokens` for a token
before every connection, so a refused or expiring one is replaced. After `max_attempts` failed
connections in a row the state becomes `failed` and iteration ends with `SubscriberFailed`.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import inspect
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from clients.backoff import Backoff
from clients.cursor import decode_cursor
from clients.drift import DriftEstimate, epoch_seconds
from clients.ordering import Event, Ordering

TokenProvider = Callable[[], str | Awaitable[str]]
StateListener = Callable[[str], None]
CONNECTING, OPEN, RECONNECTING, OFFLINE = "connecting", "open", "reconnecting", "offline"
CLOSED, FAILED = "closed", "failed"
WEBSOCKET_TRIES_BEFORE_SSE = 3  # with transport="auto": then SSE, for the rest of the subscription
CONNECTION_LIMIT_SECONDS = 2 * 3600  # API Gateway closes every WebSocket connection after 2 hours
MAX_LAST = 1000  # the most history a `last` replay returns
REPLAY_PAGE = 1000  # the most events a replay by cursor returns: catching up takes few round trips
RENEW_RETRY_SECONDS = 5.0  # a failed planned reconnect is tried again after this (the old one lasts)


class SubscriberFailed(RuntimeError):
    """No connection could be made within the allowed attempts."""


class _Refused(Exception):
    """The server refused the connection (a token or permission problem): get a new token."""


@dataclass(frozen=True)
class Endpoints:
    websocket_url: str | None
    sse_url: str | None

    @classmethod
    def from_file(cls, path: str | Path, stack: str | None = None) -> Endpoints:
        """From `cdk deploy --outputs-file` or the local stack's endpoints.json (its first stack when
        `stack` is not named)."""
        outputs = json.loads(Path(path).read_text())
        values = outputs[stack] if stack else next(iter(outputs.values()))
        sse = values.get("SseUrl")
        return cls(values.get("WebSocketUrl"), (sse.rstrip("/") + "/events") if sse else None)


SseMessage = tuple[str, str, str | None]  # event, data, id


class SseReader:
    """An SSE response a message at a time. The response is read on in a task of its own, so a caller
    can wait a bounded time for the next message and look at its own clocks in between."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._fields: dict[str, str] = {}
        self._reader = asyncio.create_task(self._pump(response))

    async def __aenter__(self) -> SseReader:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._reader.cancel()

    async def next(self, within: float) -> SseMessage | None:
        """The next message with an event and data, or None if none came within `within` seconds.
        EOFError once the response has ended."""
        try:
            async with asyncio.timeout(within):  # not wait_for: on 3.11 it can swallow a cancel
                while True:
                    line = await self._lines.get()
                    if line is None:
                        self._lines.put_nowait(None)  # ended, for every later call too
                        raise EOFError
                    if message := self._feed(line):
                        return message
        except TimeoutError:
            return None

    async def _pump(self, response: httpx.Response) -> None:
        try:
            async for line in response.aiter_lines():
                await self._lines.put(line)
        except httpx.HTTPError:
            pass  # a broken connection ends the response as its end does
        finally:
            self._lines.put_nowait(None)

    def _feed(self, line: str) -> SseMessage | None:
        if line:
            name, _, value = line.partition(": ")
            self._fields[name] = value
            return None
        fields, self._fields = self._fields, {}
        if "event" not in fields or "data" not in fields:
            return None  # a comment (": heartbeat") or an incomplete message
        return fields["event"], fields["data"], fields.get("id")


def decode(event: Event) -> Event:
    """Compressed data (`"encoding": "gzip"`) restored, so the application sees plain data."""
    if event.get("encoding") != "gzip":
        return event
    plain = {k: v for k, v in event.items() if k != "encoding"}
    plain["data"] = json.loads(gzip.decompress(base64.b64decode(event["data"])))
    return plain


class Subscriber:
    def __init__(
        self,
        endpoints: Endpoints,
        tokens: TokenProvider,
        types: Iterable[str],
        *,
        transport: str = "auto",
        backoff: Backoff | None = None,
        last: int = 0,
        gap_seconds: float = 1.0,
        ping_seconds: float = 60.0,
        silence_seconds: float = 150.0,
        renew_before_seconds: float = 60.0,
        drift_warning_seconds: float = 2.0,
        on_state: StateListener | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        if transport not in ("auto", "websocket", "sse"):
            raise ValueError("transport is auto, websocket or sse")
        self.types = frozenset(types)
        if not self.types:
            raise ValueError("subscribe to at least one type")
        if not 0 <= last <= MAX_LAST:
            raise ValueError(f"last is 0 (none) to {MAX_LAST} events")
        self.endpoints, self.transport, self.last = endpoints, transport, last
        self.gap_seconds, self.ping_seconds, self.silence_seconds = gap_seconds, ping_seconds, silence_seconds
        self.renew_before = renew_before_seconds
        self.ordering = Ordering()
        self.backoff = backoff or Backoff()
        self.drift = DriftEstimate()
        self.state = CLOSED
        self.connections = self.gap_replays = self.planned_reconnects = 0
        self.current_transport: str | None = None
        self.next_retry_at: float | None = None  # epoch seconds of the next attempt, while waiting
        self._tokens = tokens
        self._drift_warning = drift_warning_seconds
        self._on_state, self._on_warning = on_state, on_warning
        self._started = False  # the first subscription has begun: every later one resumes
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def coalesced(self) -> int:
        """Events the server left out under overload (docs/reliability.md, "Graceful degradation"): each
        was superseded by a later event of its type and key that was handed over, whose `coalesced`
        field counts them. A replay from an earlier cursor returns every one of them."""
        return self.ordering.coalesced

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=1)
        self._set_state(CLOSED)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- connection loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        unreachable = 0  # WebSocket connections that failed in a row before opening
        while True:
            use_sse = self.transport == "sse" or (
                self.transport == "auto"
                and (self.endpoints.websocket_url is None or unreachable >= WEBSOCKET_TRIES_BEFORE_SSE)
            )
            self.current_transport = "sse" if use_sse else "websocket"
            if self.state == CLOSED:
                self._set_state(CONNECTING)
            opened = self.connections
            at_once = refused = False
            try:
                token = await self._token()
                at_once = await (self._sse(token) if use_sse else self._websocket(token))
            except _Refused as refusal:
                refused = True
                self._warn(f"connection refused ({refusal}); asking for a new token")
            except (OSError, TimeoutError, websockets.WebSocketException, httpx.HTTPError) as error:
                self._warn(f"{self.current_transport} connection ended: {type(error).__name__}")
            if not use_sse:
                unreachable = 0 if self.connections > opened else unreachable + 1
            self.ordering.cut()
            if at_once:  # ended as planned (or to repair a gap): resume from the position now
                continue
            delay = self.backoff.next_delay()
            if delay is None:
                self._set_state(FAILED)
                failure = SubscriberFailed(f"no connection after {self.backoff.max_attempts} attempts")
                self._queue.put_nowait(failure)
                return
            # offline: the server could not be reached at all (reconnecting: it was, or it answered)
            self._set_state(RECONNECTING if self.connections > opened or refused else OFFLINE)
            self.next_retry_at = time.time() + delay
            await asyncio.sleep(delay)
            self.next_retry_at = None

    async def _token(self) -> str:
        token = self._tokens()
        return await token if inspect.isawaitable(token) else token

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            self._queue.put_nowait(decode(event))

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    def _warn(self, message: str) -> None:
        if self._on_warning is not None:
            self._on_warning(message)

    @property
    def started(self) -> bool:
        """The first subscription has begun: every event from here on reaches the application."""
        return self._started

    def _opened(self) -> None:
        self.connections += 1
        self.backoff.connected()
        self._set_state(OPEN)

    # -- WebSocket ----------------------------------------------------------------------------------

    async def _websocket(self, token: str) -> bool:
        """One WebSocket connection after another without a break: a successor is opened and caught up
        before the current one reaches its token's expiry or API Gateway's 2-hour limit, or at once when
        the server says `reconnect` (make before break); the overlap is safe, since the ordering drops
        every repeat."""
        current = await self._open_websocket(token)
        try:
            while True:
                # Bounded: `welcome` (with the token's expiry) moves the renewal after this started.
                done, _ = await asyncio.wait({current.reader}, timeout=min(current.renew_in(), 1.0))
                if done:
                    current.reader.result()  # the connection ended: raises why
                    return False
                if current.renew_in() > 0:
                    continue
                try:
                    successor = await self._open_websocket(await self._token())
                except (_Refused, OSError, TimeoutError, websockets.WebSocketException) as error:
                    # The current connection serves on; the next try asks for a new token again.
                    self._warn(f"planned reconnect failed: {type(error).__name__} {error}")
                    current.postpone(RENEW_RETRY_SECONDS)
                    continue
                if await successor.caught_up_within(self.silence_seconds):
                    self.planned_reconnects += 1
                    current, retired = successor, current
                else:
                    retired = successor
                    current.postpone(RENEW_RETRY_SECONDS)
                await retired.close()
        finally:
            await current.close()

    async def _open_websocket(self, token: str) -> _WebSocketConnection:
        assert self.endpoints.websocket_url is not None
        try:
            ws = await websockets.connect(
                self.endpoints.websocket_url,
                subprotocols=[Subprotocol("streaming.v1"), Subprotocol(f"token.{token}")],
                open_timeout=10,
            )
        except websockets.InvalidStatus as refused:
            raise _Refused(f"HTTP {refused.response.status_code}") from None
        self._opened()
        return _WebSocketConnection(self, ws)

    def _check_drift(self) -> None:
        offset = self.drift.offset_seconds
        if offset is not None and abs(offset) > self._drift_warning:
            self._warn(f"clock drift {offset:+.1f} s from the server")

    # -- SSE ----------------------------------------------------------------------------------------

    async def _sse(self, token: str) -> bool:
        """One SSE stream; True when it ended as planned or to repair a gap (resume at once)."""
        assert self.endpoints.sse_url is not None
        params = {"types": ",".join(sorted(self.types))}
        if self._started:
            params["cursor"] = self.ordering.cursor
        elif self.last:
            self._warn("history (last) is read over the WebSocket only: SSE starts live")
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10, read=self.silence_seconds)) as client,
            client.stream("GET", self.endpoints.sse_url, params=params, headers=headers) as response,
        ):
            if response.status_code in (401, 403):
                await response.aread()
                raise _Refused(f"HTTP {response.status_code}")
            if response.status_code != 200:
                await response.aread()
                raise OSError(f"HTTP {response.status_code}")
            self._opened()
            async with SseReader(response) as reader:
                return await self._sse_messages(reader)

    async def _sse_messages(self, reader: SseReader) -> bool:
        while True:
            if self.ordering.waiting() > self.gap_seconds:
                self.gap_replays += 1
                return True  # one ordered stream has no gap to wait for: start again from the position
            try:
                message = await reader.next(0.25)
            except EOFError:
                return False  # ended without `end`: a server fault, retried with backoff
            if message is None:
                continue
            kind, data, event_id = message
            if kind == "end":
                self.planned_reconnects += 1
                return True  # planned: reconnect from the position (with a new token)
            if kind == "truncated":
                self._warn("events after the position have left the replay window")
            elif kind in self.types:
                self._deliver(self.ordering.offer(json.loads(data)))
            if event_id:
                self._started = True
                self._deliver(self.ordering.adopt(decode_cursor(event_id)))


class _WebSocketConnection:
    """One WebSocket connection of a subscriber, read in a task of its own: two overlap while a
    planned reconnect hands over, both feeding the subscriber's one ordering."""

    def __init__(self, subscriber: Subscriber, ws: ClientConnection) -> None:
        self.subscriber, self.ws = subscriber, ws
        self.caught_up = asyncio.Event()  # subscribed, and the resume replay (or history) is done
        self._renew_at = time.monotonic() + CONNECTION_LIMIT_SECONDS - subscriber.renew_before
        self._scanned: dict[str, int] = {}  # how far replays looked, per stream
        self._history: list[Event] | None = None  # events that arrive while "last N" is read
        self._start: dict[str, int] = {}  # the first subscription's cursor
        self._last_replay = 0.0
        self.reader = asyncio.create_task(self._read())

    def renew_in(self) -> float:
        return max(0.0, self._renew_at - time.monotonic())

    def postpone(self, seconds: float) -> None:
        self._renew_at = time.monotonic() + seconds

    def renew_now(self) -> None:
        """Start the planned reconnect at once, unless it is under way (then the successor replaces
        this connection anyway, or a failed one is retried after its pause)."""
        self._renew_at = min(self._renew_at, time.monotonic())

    async def caught_up_within(self, seconds: float) -> bool:
        waiter = asyncio.create_task(self.caught_up.wait())
        await asyncio.wait({waiter, self.reader}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        return self.caught_up.is_set()

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.wait({self.reader})
        if not self.reader.cancelled():
            self.reader.exception()  # retrieved: the caller has already seen or does not need it
        await self.ws.close()

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def _replay(self, **request: Any) -> None:
        self._last_replay = time.monotonic()
        if "cursor" in request:
            request["limit"] = REPLAY_PAGE
        await self._send({"action": "replay", **request})

    async def _read(self) -> None:
        subscriber, ordering = self.subscriber, self.subscriber.ordering
        await self._send({"action": "subscribe", "types": sorted(subscriber.types), "id": "subscribe"})
        last_ping = heard = time.monotonic()
        ping_sent = 0.0
        while True:
            now = time.monotonic()
            if now - heard > subscriber.silence_seconds:
                raise TimeoutError("the connection went silent")
            gap = subscriber.gap_seconds
            if ordering.waiting() > gap and now - self._last_replay > gap:
                subscriber.gap_replays += 1
                await self._replay(cursor=ordering.cursor, id="gap")
            if now - last_ping > subscriber.ping_seconds:
                last_ping, ping_sent = now, time.time()
                await self._send({"action": "ping", "id": "ping"})
            try:
                async with asyncio.timeout(0.25):  # not wait_for: on 3.11 it can swallow a cancel
                    message = json.loads(await self.ws.recv())
            except TimeoutError:
                continue
            heard = time.monotonic()
            kind, request = message.get("type"), message.get("id")
            if kind == "welcome":
                self._renew_before(message["expires_at"] - epoch_seconds(message["server_time"]))
                last_ping = -math.inf  # ping now: drift and heads known at once, not a minute later
            elif kind == "reconnect":
                self.renew_now()  # the server closes this connection soon (`at`): hand over now
            elif kind == "subscribed":
                await self._subscribed(decode_cursor(message["cursor"]))
            elif kind == "events":
                for event in message["events"]:
                    if event["type"] not in subscriber.types:
                        continue
                    if self._history is not None:
                        self._history.append(event)
                    else:
                        subscriber._deliver(ordering.offer(event))
            elif kind == "replay":
                cursor = decode_cursor(message["cursor"])
                for stream, seq in cursor.items():
                    self._scanned[stream] = max(self._scanned.get(stream, 0), seq)
                if message["truncated"]:
                    subscriber._warn("events after the position have left the replay window")
                if request == "history":
                    self._end_history(cursor)
                elif message["more"]:
                    await self._replay(cursor=message["cursor"], id=request)
                elif request == "resume":
                    self.caught_up.set()
            elif kind == "pong":
                subscriber.drift.add(ping_sent, message["server_time"], time.time())
                subscriber._check_drift()
                if ordering.behind(message["heads"], self._scanned):  # a lost last event
                    subscriber.gap_replays += 1
                    await self._replay(cursor=ordering.cursor, id="gap")
            elif kind == "error" and request == "subscribe":
                raise _Refused(message.get("code", "error"))
            elif kind == "error" and request == "history":
                subscriber._warn(f"history could not be read ({message.get('code')}); starting live")
                self._end_history({})

    def _renew_before(self, lifetime: float) -> None:
        """Renew before the token expires: `renew_before` seconds ahead, or at half a short lifetime."""
        lead = min(self.subscriber.renew_before, lifetime / 2)
        self._renew_at = min(self._renew_at, time.monotonic() + lifetime - lead)

    async def _subscribed(self, cursor: dict[str, int]) -> None:
        subscriber = self.subscriber
        if subscriber._started:  # a resume: everything after the position
            await self._replay(cursor=subscriber.ordering.cursor, id="resume")
        elif subscriber.last:  # a first subscription, with history
            self._start, self._history = cursor, []
            await self._replay(last=subscriber.last, id="history")
        else:  # a first subscription starts at its cursor
            self._start = cursor
            self._end_history({})

    def _end_history(self, cursor: dict[str, int]) -> None:
        start = {s: max(self._start.get(s, 0), cursor.get(s, 0)) for s in {*self._start, *cursor}}
        history, self._history = self._history or [], None
        self.subscriber._deliver(self.subscriber.ordering.start(start, history))
        self.subscriber._started = True
        self.caught_up.set()
