"""Serving the local stack's apps: loopback sockets, uvicorn servers, background tasks, schedules."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from local import console

if TYPE_CHECKING:
    from local.lambda_runtime import LocalFunction

# A local-only route of each local process (the live page's origin, the gateway): what it holds open,
# for the soak run (tests/soak.py) to see that churn leaves nothing behind. Never deployed.
DEBUG_PATH = "/local/debug"
# The host names the local-only routes answer (no DNS rebinding onto them).
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
# When the stack stops, what a request in flight still has to be answered (an invocation running
# finishes), before it is cut off; well within uvicorn's own grace, after which it cancels everything.
ANSWER_SECONDS = 1.0
SHUTDOWN_SECONDS = 3
# Invocations still running in threads this long after the servers stopped are abandoned: the process
# ends without them, as Lambda ends an execution environment that does not shut down in time.
RUNNING_SECONDS = 10.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted connections: without it, a response's body waits for the client's delayed
    # ACK of its headers (Nagle), 40 ms per keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(
    *apps: tuple[ASGIApp, socket.socket],
    also: Awaitable[Any] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve each app on its socket until SIGTERM or SIGINT (Ctrl-C) stops them all at once; `also`
    runs alongside; `on_stop` runs (in a thread) as soon as they start stopping, and is waited for.

    Stopping is bounded: each server stops accepting, closes its WebSocket connections (1012), ends its
    SSE streams and answers what is still unanswered after `ANSWER_SECONDS` with 503 (`_ends_on_shutdown`).
    Work queued for a thread (invocations waiting their turn) is then dropped, since nobody waits for its
    answer; what already runs in a thread is waited for, `RUNNING_SECONDS` at most."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(thread_name_prefix="asyncio")  # asyncio's own, but ours to cut short
    loop.set_default_executor(executor)
    stopping = asyncio.Event()
    servers = [
        _Server(
            uvicorn.Config(
                _ends_on_shutdown(app, stopping),
                log_level="warning",
                ws="websockets-sansio",
                ws_max_size=1 << 20,
                timeout_graceful_shutdown=SHUTDOWN_SECONDS,
            ),
            stopping,
        )
        for app, _ in apps
    ]

    def stop() -> None:
        if stopping.is_set():  # a second Ctrl-C: stop waiting for anything
            for server in servers:
                server.force_exit = True
        stopping.set()
        for server in servers:
            server.should_exit = True

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop)
    stopped = asyncio.ensure_future(_once_set(stopping, on_stop))
    running = [server.serve(sockets=[sock]) for server, (_, sock) in zip(servers, apps, strict=True)]
    background = asyncio.ensure_future(also) if also is not None else None
    try:
        await asyncio.gather(*running)
    finally:
        stopping.set()  # however the servers ended
        await stopped
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if background is not None:
            background.cancel()
        executor.shutdown(wait=False, cancel_futures=True)
        _join_or_abandon(executor)


def _join_or_abandon(executor: ThreadPoolExecutor) -> None:
    """Wait for what runs in `executor`'s threads, `RUNNING_SECONDS` at most (the servers have
    stopped: blocking the loop holds nothing up); past that, end the process without it."""
    joining = threading.Thread(target=executor.shutdown, name="joining", daemon=True)
    joining.start()
    joining.join(RUNNING_SECONDS)
    if joining.is_alive():
        print(
            f"local stack (pid {os.getpid()}): invocations still running {RUNNING_SECONDS:.0f} s after the "
            "stop were abandoned",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(0)


async def _once_set(event: asyncio.Event, then: Callable[[], None] | None) -> None:
    await event.wait()
    if then is not None:  # in a thread of its own: the executor's may all be taken by invocations
        with ThreadPoolExecutor(1, thread_name_prefix="on-stop") as own:
            await asyncio.get_running_loop().run_in_executor(own, then)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping
        _servers.add(self)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """`serve` stops every server on a signal. uvicorn's own handling would stop one server per
        signal, one after the other, and raise the signal again when done."""
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stopping.set()
        await super().shutdown(sockets=sockets)


_servers: weakref.WeakSet[_Server] = weakref.WeakSet()  # this process's, for `process_report`


def process_report(**more: int) -> dict[str, int]:
    """This process as `DEBUG_PATH` reports it: its asyncio tasks, threads, open HTTP and WebSocket
    connections (over all its servers) and Python's allocated memory blocks (what it holds, however
    fragmented its memory), and what the caller adds."""
    return {
        "pid": os.getpid(),
        "allocated_blocks": sys.getallocatedblocks(),
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "connections": sum(len(server.server_state.connections) for server in _servers),
        **more,
    }


def _ends_on_shutdown(app: ASGIApp, stopping: asyncio.Event) -> ASGIApp:
    """When the local stack stops, a response still streaming (an open SSE stream) ends as if its
    client had left, and its body is completed; a request still unanswered after `ANSWER_SECONDS` (a
    publish waiting for its function, a `@connections` post held by a fault) is cut off and answered
    503. uvicorn would otherwise wait for them, then cancel them and log each cancellation as
    "Exception in ASGI application" with a traceback."""

    cut_off = _CutOff(stopping)

    async def app_until_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _websocket_until_shutdown(app, scope, receive, send, cut_off)
            return
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        received = started = completed = False

        async def receive_until_shutdown() -> Message:
            nonlocal received
            if not received:  # the request itself always arrives whole
                request = await receive()
                received = request["type"] != "http.request" or not request.get("more_body")
                return request
            message = asyncio.ensure_future(receive())
            try:
                await _until_stopping(message, stopping)
            finally:
                message.cancel()
            return message.result() if message.done() else {"type": "http.disconnect"}

        async def tracked(message: Message) -> None:
            nonlocal started, completed
            started = started or message["type"] == "http.response.start"
            completed = completed or (
                message["type"] == "http.response.body" and not message.get("more_body")
            )
            await send(message)

        await cut_off.run(app(scope, receive_until_shutdown, tracked))
        if not started:
            await send(_UNAVAILABLE)
            await send({"type": "http.response.body", "body": b'{"message":"the local stack is stopping"}'})
        elif not completed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app_until_shutdown


async def _websocket_until_shutdown(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, cut_off: _CutOff
) -> None:
    """uvicorn closes open WebSocket connections itself (1012) when the stack stops, and they end at
    once; a connection still being opened (its `$connect` waiting for a function of a stack that is
    going) or closed (its `$disconnect`) after `ANSWER_SECONDS` is cut off, and refused if it was not
    accepted yet."""
    accepted = False

    async def tracked(message: Message) -> None:
        nonlocal accepted
        accepted = accepted or message["type"] == "websocket.accept"
        await send(message)

    if not await cut_off.run(app(scope, receive, tracked)) and not accepted:
        await send({"type": "websocket.close", "code": 1012})


class _CutOff:
    """Runs a server's requests to their end, or until `ANSWER_SECONDS` after the stack starts stopping,
    when they are cancelled. Requests that start while it runs are watched by one task for all of them:
    every fan-out post to the gateway is a request, and a watch of its own cost each about 30 us."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self._running: set[asyncio.Future[None]] = set()
        self._watch = asyncio.ensure_future(self._cut_off_once_stopping())

    async def run(self, work: Awaitable[None]) -> bool:
        """Run `work`: whether it ended by itself. An error it raises is raised (uvicorn's to log)."""
        if self._stopping.is_set():  # started while the stack stops: it has `ANSWER_SECONDS` of its own
            return await _cut_off_once_stopping(work, self._stopping)
        task = asyncio.ensure_future(work)
        self._running.add(task)
        try:
            await asyncio.wait({task})
        finally:
            self._running.discard(task)
            if task.cancel():  # the request itself was cancelled: so is its work
                await asyncio.wait({task})
        return _ended_by_itself(task)

    async def _cut_off_once_stopping(self) -> None:
        await self._stopping.wait()
        await asyncio.sleep(ANSWER_SECONDS)
        for task in list(self._running):
            task.cancel()


async def _cut_off_once_stopping(work: Awaitable[None], stopping: asyncio.Event) -> bool:
    """Run `work` to its end, or until `ANSWER_SECONDS` after the stack starts stopping, when it is
    cancelled: whether it ended by itself. An error it raises is raised (uvicorn's to log, as before)."""
    task = asyncio.ensure_future(work)
    try:
        await _until_stopping(task, stopping)
        await asyncio.wait({task}, timeout=ANSWER_SECONDS)
    finally:
        if task.cancel():  # not done yet: cut off
            await asyncio.wait({task})
    return _ended_by_itself(task)


def _ended_by_itself(task: asyncio.Future[None]) -> bool:
    """Whether `task` ended by itself rather than cut off; an error it raised is raised."""
    if task.cancelled():
        return False
    task.result()
    return True


async def _until_stopping(work: asyncio.Future[Any], stopping: asyncio.Event) -> None:
    """Until `work` is done or the stack starts stopping, whichever comes first."""
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()


_UNAVAILABLE: Message = {
    "type": "http.response.start",
    "status": 503,
    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
}


async def every(function: LocalFunction, seconds: float) -> None:
    """What an EventBridge schedule does for a deployed function. An invocation that did nothing
    prints nothing (local.console): every few seconds, its zero metrics would fill the console."""
    console.scheduled.set(True)  # this task's context, which its invocations' threads inherit
    while True:
        await asyncio.sleep(seconds)
        event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
        await asyncio.to_thread(function.invoke, event)


class Background:
    """Fire-and-forget work that is kept referenced until it is done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)


async def exit_with_parent() -> None:
    """A child process of the local stack stops when the stack does, however the stack ended."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
