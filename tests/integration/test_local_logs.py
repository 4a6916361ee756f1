"""What `make run` prints when clients come and go: one line per connection that ends, whoever ended
it and however, no traceback; every line names the function that wrote it."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from httpx_sse import connect_sse
from websockets.typing import Subprotocol

from local.publish import local_client
from local.state import LocalState
from local.token import issue
from tests.conftest import signal
from tests.integration.conftest import outputs, running_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]
T = TypeVar("T")
TIMEOUT = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("logs"), "--sse-heartbeat-seconds", "1") as state:
        yield state


def log_text(stack: LocalState) -> str:
    return (stack.directory / "stack.log").read_text()


def entries(stack: LocalState, after: int = 0) -> list[dict[str, Any]]:
    """The structured (JSON) lines of the stack's output from character `after` on."""
    found = []
    for line in log_text(stack)[after:].splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def wait_for(condition: Callable[[], T], what: str) -> T:
    deadline = time.monotonic() + TIMEOUT
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not within {TIMEOUT} s: {what}"
        time.sleep(0.1)
    return result


def no_traceback(stack: LocalState) -> None:
    text = log_text(stack)
    for sign in ("Traceback", "Exception in ASGI application", "WebSocketDisconnect", "ClientDisconnected"):
        assert sign not in text, text[text.index(sign) - 2000 : text.index(sign) + 2000]


def logged(stack: LocalState, message: str, subject: str) -> list[dict[str, Any]]:
    return [e for e in entries(stack) if e.get("message") == message and e.get("subject") == subject]


def disconnected(stack: LocalState, connection_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in entries(stack)
        if e.get("message") == "disconnected" and e.get("connection_id") == connection_id
    ]


async def subscribed_client(stack: LocalState, subject: str) -> tuple[Any, str]:
    token = issue(stack, "viewer", subject)
    ws = await websockets.connect(
        outputs(stack)["WebSocketUrl"],
        subprotocols=[Subprotocol("streaming.v1"), Subprotocol(f"token.{token}")],
    )
    await ws.send(json.dumps({"action": "subscribe", "types": ["signal.created"], "id": "s"}))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert welcome["type"] == "welcome"
    while json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] != "subscribed":
        pass
    return ws, welcome["connection_id"]


@pytest.mark.connections
def test_websocket_clients_that_leave_while_events_flow_end_with_one_line_each_and_no_traceback(stack):
    async def scenario() -> dict[str, str]:
        clients = {
            name: await subscribed_client(stack, name) for name in ("polite", "vanishing", "resetting")
        }
        publishing = asyncio.get_running_loop().run_in_executor(
            None, lambda: [local_client(stack).publish([signal() for _ in range(5)]) for _ in range(10)]
        )
        await asyncio.sleep(0.2)  # leave while events are being delivered to them
        await clients["polite"][0].close()  # a close frame, 1000
        clients["vanishing"][0].transport.abort()  # gone without a close frame
        sock = clients["resetting"][0].transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        clients["resetting"][0].transport.abort()  # a TCP reset
        await publishing
        return {name: connection_id for name, (_, connection_id) in clients.items()}

    ids = asyncio.run(asyncio.wait_for(scenario(), 90))
    statuses = {
        name: wait_for(functools.partial(disconnected, stack, cid), f"$disconnect of {name}")
        for name, cid in ids.items()
    }
    assert {name: [e["status"] for e in lines] for name, lines in statuses.items()} == {
        "polite": [1000],
        "vanishing": [1006],
        "resetting": [1006],
    }
    assert all(line["function_name"] == "websocket" for lines in statuses.values() for line in lines)
    documents = entries(stack)
    opened = [d for d in documents if "ConnectionsOpened" in d and d.get("transport") == "websocket"]
    closed = [d for d in documents if "ConnectionsClosed" in d and d.get("transport") == "websocket"]
    assert len(opened) >= 3 and len(closed) >= 3  # by role and transport; closed by transport
    assert all(d["role"] for d in opened)
    # A close frame is a planned disconnect; a connection lost without one (1006) is not.
    kinds = [d["kind"] for d in documents if "Disconnects" in d and d.get("transport") == "websocket"]
    assert kinds.count("planned") >= 1 and kinds.count("unplanned") >= 2
    no_traceback(stack)


@pytest.mark.connections
def test_a_client_that_leaves_while_it_is_being_authorized_is_disconnected_too(stack):
    before = len(log_text(stack))
    url = urlsplit(outputs(stack)["WebSocketUrl"])
    token = issue(stack, "viewer", "impatient")
    with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT) as raw:
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: streaming.v1, token.{token}\r\n\r\n"
            ).encode()
        )
    # Gone before the handshake's answer, which waits for the authorizer and $connect: $connect
    # registered the connection, so $disconnect must remove it.
    [connected] = wait_for(
        lambda: [e for e in entries(stack, before) if e.get("message") == "connected"],
        "$connect of the client",
    )
    [line] = wait_for(lambda: disconnected(stack, connected["connection_id"]), "its $disconnect")
    assert line["status"] == 1006
    no_traceback(stack)


@pytest.mark.connections
def test_sse_clients_that_leave_end_with_one_line_each_naming_the_sse_function(stack):
    local_client(stack).publish(signal())  # publish-http ran last: its keys must not show in SSE lines
    url = outputs(stack)["SseUrl"] + "events"
    curl = subprocess.Popen(
        [
            "curl",
            "-sN",
            "--max-time",
            "60",
            "-H",
            f"Authorization: Bearer {issue(stack, 'viewer', 'curl-leaver')}",
            url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert curl.stdout is not None
        wait_for(lambda: curl.stdout.readline().startswith("event: heartbeat"), "curl's first heartbeat")  # type: ignore[union-attr]
    finally:
        curl.kill()  # Ctrl-C
        curl.wait(TIMEOUT)
    with (
        httpx.Client(timeout=TIMEOUT) as client,
        connect_sse(client, "GET", url, params={"token": issue(stack, "viewer", "httpx-leaver")}) as source,
    ):
        assert next(source.iter_sse()).event == "heartbeat"

    for subject in ("curl-leaver", "httpx-leaver"):
        [closed] = wait_for(
            functools.partial(logged, stack, "sse stream closed", subject), f"{subject}'s end"
        )
        [opened] = logged(stack, "sse stream", subject)
        assert closed["how"] == "client left"
        assert opened["function_name"] == closed["function_name"] == "sse"
        assert opened["function_request_id"] == closed["function_request_id"]  # one invocation per stream

    # The metrics (EMF) of the two streams: opened by role and transport, ended by how, and their length;
    # written after the closing line, so waited for.
    def stream_metrics() -> dict[str, list[dict[str, Any]]] | None:
        documents = entries(stack)
        found = {
            "opened": [d for d in documents if "ConnectionsOpened" in d and d.get("transport") == "sse"],
            "ended": [d for d in documents if "SseStreamsEnded" in d and d.get("ending") == "client left"],
            "seconds": [d for d in documents if "SseStreamSeconds" in d],
            # a client that leaves ends its stream on purpose
            "planned": [
                d
                for d in documents
                if "Disconnects" in d and (d.get("transport"), d.get("kind")) == ("sse", "planned")
            ],
        }
        return found if all(len(found[name]) >= 2 for name in found) else None

    found = wait_for(stream_metrics, "the two streams' metrics")
    assert {d["role"] for d in found["opened"]} == {"viewer"}
    no_traceback(stack)


@pytest.mark.connections
def test_stopping_the_stack_ends_open_streams_without_a_traceback(tmp_path):
    outcome: dict[str, Any] = {}
    opened = threading.Event()

    def read_until_the_end(url: str, token: str) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=60)) as client,
                connect_sse(client, "GET", url, params={"token": token}) as source,
            ):
                for sse in source.iter_sse():
                    opened.set()
                    outcome.setdefault("last", sse.event)
            outcome["ended"] = "cleanly"
        except Exception as error:  # what the client saw when the server went away
            outcome["ended"] = repr(error)
        finally:
            opened.set()

    with running_local_stack(tmp_path) as stack:
        reader = threading.Thread(
            target=read_until_the_end,
            args=(outputs(stack)["SseUrl"] + "events", issue(stack, "viewer", "open-at-stop")),
            daemon=True,
        )
        reader.start()
        assert opened.wait(TIMEOUT)

        async def listen_until_closed() -> None:
            ws, _ = await subscribed_client(stack, "open-at-stop")
            subscribed.set()
            try:
                while True:
                    await ws.recv()
            except websockets.ConnectionClosed as closed:
                outcome["websocket"] = closed.rcvd.code if closed.rcvd else None

        subscribed = threading.Event()
        listener = threading.Thread(target=asyncio.run, args=(listen_until_closed(),), daemon=True)
        listener.start()
        assert subscribed.wait(TIMEOUT)
        stopping_started = time.monotonic()
    stopped_in = time.monotonic() - stopping_started
    reader.join(TIMEOUT)
    listener.join(TIMEOUT)
    assert outcome.get("ended") == "cleanly"  # before: the server cut the stream after 3 s
    assert outcome.get("websocket") == 1012  # uvicorn's "service restart": reconnect
    assert stopped_in < 10
    no_traceback(stack)
