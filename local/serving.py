"""Serving the local stack's apps: loopback sockets, uvicorn servers, background tasks, schedules."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import weakref
from collections.abc import Awaitable, Coroutine
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


async def serve(*apps: tuple[ASGIApp, socket.socket], also: Awaitable[Any] | None = None) -> None:
    """Serve each app on its socket until a signal stops them; `also` runs alongside."""
    stopping = asyncio.Event()
    servers = [
        _Server(
            uvicorn.Config(
                _ends_on_shutdown(app, stopping),
                log_level="warning",
                ws="websockets-sansio",
                ws_max_size=1 << 20,
                timeout_graceful_shutdown=3,
            ),
            stopping,
        )
        for app, _ in apps
    ]
    running = [server.serve(sockets=[sock]) for server, (_, sock) in zip(servers, apps, strict=True)]
    background = asyncio.ensure_future(also) if also is not None else None
    try:
        await asyncio.gather(*running)
    finally:
        if background is not None:
            background.cancel()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping
        _servers.add(self)

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
    """When the local stack stops (Ctrl-C), a response still streaming (an open SSE stream) ends as if
    its client had left, and its body is completed: uvicorn would otherwise wait for it, then cancel it
    and log the cancellation as "Exception in ASGI application" with a traceback."""

    async def app_until_shutdown(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # WebSocket connections: uvicorn closes them itself (1012)
            await app(scope, receive, send)
            return
        received = started = completed = False

        async def receive_until_shutdown() -> Message:
            nonlocal received
            if not received:  # the request itself always arrives whole
                request = await receive()
                received = request["type"] != "http.request" or not request.get("more_body")
                return request
            message, stop = asyncio.ensure_future(receive()), asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait({message, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in (message, stop):
                    if not waiting.done():
                        waiting.cancel()
            return message.result() if message.done() else {"type": "http.disconnect"}

        async def tracked(message: Message) -> None:
            nonlocal started, completed
            started = started or message["type"] == "http.response.start"
            completed = completed or (
                message["type"] == "http.response.body" and not message.get("more_body")
            )
            await send(message)

        await app(scope, receive_until_shutdown, tracked)
        if started and not completed and stopping.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app_until_shutdown


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
