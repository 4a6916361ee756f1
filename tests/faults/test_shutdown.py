"""The local stack stopping (SIGTERM) under load: WebSocket subscribers and SSE streams open, publishes
queued behind a fan-out whose every `@connections` post hangs (local.faults). It exits by itself, with
status 0 and no traceback, its gateway process with it; the WebSocket clients are closed with 1012 and
the SSE streams ended. Before the shutdown was bounded (local/serving.py), the stack waited for every
queued publish to post to the hung gateway, 40 s and more; idle, it exits cleanly as well."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from local.publish import local_client
from local.state import LocalState
from local.token import issue
from tests.conftest import signal as signal_event
from tests.faults.delivery import answered, set_fault
from tests.integration.conftest import local_stack_process, outputs, until
from tests.integration.test_local_logs import no_traceback

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("local-stack")]
SUBSCRIBERS = 50  # WebSocket connections, each subscribed to every event published here
STREAMS = 20  # SSE streams
PUBLISHES = 40  # one event each, in flight or queued for the publish function when the stack stops
EXIT_SECONDS = 30  # generous on a loaded machine; unbounded, the stack took 40 s and more
SERVICE_RESTART = 1012  # what uvicorn closes WebSocket connections with when it stops


async def subscriber(stack: LocalState, subject: str) -> websockets.ClientConnection:
    token = issue(stack, "analyst", subject)
    ws = await websockets.connect(
        outputs(stack)["WebSocketUrl"],
        subprotocols=[Subprotocol("streaming.v1"), Subprotocol(f"token.{token}")],
    )
    await ws.send(json.dumps({"action": "subscribe", "types": ["signal.created"]}))
    while json.loads(await ws.recv())["type"] != "subscribed":
        pass
    return ws


async def stream(client: httpx.AsyncClient, stack: LocalState, subject: str, opened: asyncio.Event) -> None:
    """An SSE stream read until the stack ends it (a clean end of the body, or an error)."""
    params = {"token": issue(stack, "analyst", subject), "types": "signal.created"}
    async with client.stream("GET", outputs(stack)["SseUrl"] + "events", params=params) as response:
        assert response.status_code == 200
        opened.set()
        async for _ in response.aiter_bytes():
            pass


def gateway_pid(stack: LocalState) -> int:
    gateway = urlsplit(outputs(stack)["WebSocketUrl"]).netloc
    return int(httpx.get(f"http://{gateway}/local/debug", timeout=30).json()["pid"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def exited(process: subprocess.Popen[str]) -> int | None:
    """The process's exit status, or None if it is still running after `EXIT_SECONDS` (then killed)."""
    await until(lambda: process.poll() is not None, EXIT_SECONDS, strict=False)
    if process.poll() is None:
        process.kill()
        process.wait()
        return None
    return process.returncode


def test_the_stack_stops_within_seconds_of_sigterm_under_load_and_cleanly(tmp_path):
    with local_stack_process(tmp_path) as (process, stack):
        gateway = gateway_pid(stack)

        async def scenario() -> None:
            subscribers = [await subscriber(stack, f"ws-{i}") for i in range(SUBSCRIBERS)]
            async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None)) as client:
                opened = [asyncio.Event() for _ in range(STREAMS)]
                streams = [
                    asyncio.ensure_future(stream(client, stack, f"sse-{i}", opened[i]))
                    for i in range(STREAMS)
                ]
                await until(lambda: all(event.is_set() for event in opened))
                # Every post held for longer than the stack's whole run: each publish then waits out the
                # fan-out client's timeout for each of its posts.
                set_fault(stack, hang_seconds=60, count=10_000)
                publisher, loop = local_client(stack), asyncio.get_running_loop()
                threads = ThreadPoolExecutor(PUBLISHES)  # all sent at once: the stack queues them
                publishes = [
                    loop.run_in_executor(threads, publisher.publish, signal_event()) for _ in range(PUBLISHES)
                ]
                await until(lambda: answered(stack)[0] >= 2, 120)  # the fan-out is held up
                process.send_signal(signal.SIGTERM)
                status = await exited(process)
                assert status == 0, f"exit status {status} (None: still running after {EXIT_SECONDS} s)"
                # What the clients were told: nothing waits on the stack any more.
                for ws in subscribers:
                    async with asyncio.timeout(EXIT_SECONDS):
                        await ws.wait_closed()
                assert {ws.close_code for ws in subscribers} == {SERVICE_RESTART}
                ended = await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True), EXIT_SECONDS)
                assert ended == [None] * STREAMS  # every stream's body ended cleanly
                await asyncio.wait_for(asyncio.gather(*publishes, return_exceptions=True), EXIT_SECONDS)
                threads.shutdown()
                publisher.close()

        asyncio.run(scenario())
        no_traceback(stack)
        assert "ERROR:" not in (stack.directory / "stack.log").read_text()  # nothing cancelled by uvicorn
        asyncio.run(until(lambda: not alive(gateway)))


def test_an_idle_stack_stops_cleanly(tmp_path):
    with local_stack_process(tmp_path) as (process, stack):
        gateway = gateway_pid(stack)
        process.send_signal(signal.SIGTERM)
        assert asyncio.run(exited(process)) == 0
        no_traceback(stack)
        asyncio.run(until(lambda: not alive(gateway)))
