"""The local WebSocket gateway: the API Gateway WebSocket contract in front of the deployed handlers.

- `$connect`: the REQUEST authorizer runs on the handshake (Deny answers HTTP 403, as API Gateway
  does), then the `$connect` route with the authorizer's context; its `Sec-WebSocket-Protocol`
  answer header selects the subprotocol.
- messages: route selection on the JSON field `action` (`$request.body.action`), `$default` when
  it names no route or the message is not JSON; messages over 128 KB close the connection (1009).
- `$disconnect` when either side closes.
- its limits: a connection is closed with 1001 after 2 hours, and after 10 minutes without a message
  from its client (both settable, so tests can shorten them).
- the `@connections` management API (POST, GET, DELETE on /{stage}/@connections/{id}), SigV4
  checked, answering 410 for a connection it does not hold, so boto3 and the handlers' own client
  work against it unchanged; and its faults on request (`/local/faults`, local.faults): 429, 500,
  410 or a hang instead of a delivery.
- `GET /local/debug`, local only: this process's tasks, threads and connections (for the soak run).

It runs in a process of its own (`python -m local.gateway`, started by `make run`), as API Gateway is
a service of its own: the publish functions' posts and the gateway's work then use both cores. Its
functions' metric (EMF) lines also go up a pipe to `make run`, which serves them at `/metrics` with
its own: the counts live in `make run`, so they go on across a restart of the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from local import console
from local.faults import ConnectionFaults
from local.lambda_runtime import ACCOUNT, LocalFunction, isolate_invocations
from local.serving import DEBUG_PATH, Background, every, exit_with_parent, listen, process_report, serve
from local.sigv4 import verify
from local.state import LocalCredentials
from streaming.auth import redact
from streaming.codec import MESSAGE_BYTES
from streaming.constants import (
    WEBSOCKET_ACTIONS,
    WEBSOCKET_CONNECTION_LIMIT_SECONDS,
    WEBSOCKET_IDLE_TIMEOUT_SECONDS,
    WEBSOCKET_TIMEOUT_SECONDS,
)

_log = logging.getLogger("local.gateway")
API_ID = "local"
STAGE = "local"
ROUTES = frozenset(WEBSOCKET_ACTIONS)
MESSAGE_TOO_BIG = 1009
STOP_SECONDS = 10  # how long `make run` waits for the gateway process to stop before killing it
GONE = 410
# API Gateway closes a connection with 1001 "when the client is idle for 10 minutes or reaches the
# maximum 2 hour connection lifetime" (API Gateway developer guide, "Overview of WebSocket APIs in API
# Gateway", section "WebSocket API status codes":
# https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api-overview.html).
# The guide gives no `disconnectReason` text for either; these are the emulator's own.
GOING_AWAY = 1001
IDLE_REASON = "Idle timeout"
LIFETIME_REASON = "Connection lifetime exceeded"


@dataclass
class _Connection:
    websocket: WebSocket
    source_ip: str
    user_agent: str
    connected_at: float = field(default_factory=time.time)
    last_active_at: float = field(default_factory=time.time)  # its client's last message

    def limit(self, lifetime: float, idle: float) -> tuple[float, str]:
        """When (epoch seconds) the gateway closes it unless its client sends a message, and why."""
        ends, idles = self.connected_at + lifetime, self.last_active_at + idle
        return (ends, LIFETIME_REASON) if ends <= idles else (idles, IDLE_REASON)


class Gateway:
    def __init__(
        self,
        authorizer: LocalFunction,
        routes: LocalFunction,
        credentials: LocalCredentials,
        *,
        host: str,
        connection_limit_seconds: float = WEBSOCKET_CONNECTION_LIMIT_SECONDS,
        idle_timeout_seconds: float = WEBSOCKET_IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self._authorizer = authorizer
        self._routes = routes
        self._credentials = credentials
        self._host = host
        self._lifetime = connection_limit_seconds
        self._idle = idle_timeout_seconds
        self._connections: dict[str, _Connection] = {}
        self._background = Background()
        self.faults = ConnectionFaults()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                WebSocketRoute("/", self._serve),
                WebSocketRoute(f"/{STAGE}", self._serve),
                Route(
                    "/{stage}/@connections/{connection_id:path}",
                    self._manage,
                    methods=["POST", "GET", "DELETE"],
                ),
                *self.faults.routes(),
                Route(DEBUG_PATH, self._debug),
            ]
        )

    async def _debug(self, request: Request) -> Response:
        """Local only (local.serving.DEBUG_PATH): the process, its WebSocket connections and the
        message invocations still running."""
        report = process_report(websockets=len(self._connections), invocations=len(self._background))
        return JSONResponse(report)

    # -- the WebSocket side --------------------------------------------------------------------------

    async def _serve(self, websocket: WebSocket) -> None:
        connection_id = base64.b64encode(uuid.uuid4().bytes[:12]).decode()  # API Gateway's shape
        headers = {name: value for name, value in websocket.headers.items()}
        query = dict(websocket.query_params)
        client = websocket.client
        source_ip = client.host if client else "127.0.0.1"
        connect = self._context(connection_id, "$connect", "CONNECT", source_ip, headers)
        policy = await asyncio.to_thread(
            self._authorizer.invoke, self._authorizer_event(connect, headers, query)
        )
        statement = policy["policyDocument"]["Statement"][0]
        if statement["Effect"] != "Allow":
            _log.info("refused connection (query %s)", redact(query))
            await websocket.close(code=1008)  # before accept: the handshake is answered with 403
            return
        authorizer = {"authorizer": {"principalId": policy["principalId"], **policy.get("context", {})}}
        answer = await asyncio.to_thread(
            self._routes.invoke, self._event(connect | authorizer, headers=headers, query=query)
        )
        if answer.get("statusCode", 200) != 200:
            await websocket.close(code=1008)
            return
        subprotocol = (answer.get("headers") or {}).get("Sec-WebSocket-Protocol")
        status, reason = 1005, "Client closed"
        try:
            # $connect has registered the connection: from here on, however it ends, $disconnect runs
            # (also for a client that left while it was being authorized: accepting it then fails).
            await websocket.accept(subprotocol=subprotocol)
            connection = _Connection(websocket, source_ip, headers.get("user-agent", ""))
            self._connections[connection_id] = connection
            while True:
                closes_at, why = connection.limit(self._lifetime, self._idle)
                try:
                    async with asyncio.timeout(closes_at - time.time()):
                        message = await websocket.receive()
                except TimeoutError:
                    status, reason = GOING_AWAY, why
                    with contextlib.suppress(*_GONE):
                        await websocket.close(code=GOING_AWAY)
                    break
                if message["type"] == "websocket.disconnect":
                    status, reason = _closed_by(message)
                    break
                body = message.get("text")
                if body is None:
                    body = (message.get("bytes") or b"").decode(errors="replace")
                connection.last_active_at = time.time()
                if len(body.encode()) > MESSAGE_BYTES:
                    status, reason = MESSAGE_TOO_BIG, "Message too big"
                    await websocket.close(code=MESSAGE_TOO_BIG)
                    break
                route = _route_of(body)
                context = self._context(connection_id, route, "MESSAGE", source_ip, headers)
                event = self._event(context | authorizer, body=body)
                # Invocations overlap, as in Lambda: answers may come out of order.
                self._background.spawn(self._route(websocket, event))
        except WebSocketDisconnect as closed:  # the client went away while the gateway was sending
            status, reason = closed.code, closed.reason or _LOST
        except OSError:  # uvicorn's ClientDisconnected: gone before the handshake's answer
            status, reason = 1006, _LOST
        finally:
            self._connections.pop(connection_id, None)
            context = self._context(connection_id, "$disconnect", "DISCONNECT", source_ip, headers)
            context |= authorizer | {"disconnectStatusCode": status, "disconnectReason": reason}
            # Its handler logs the one line that says how the connection ended.
            await asyncio.to_thread(self._routes.invoke, self._event(context, headers=headers))

    async def _route(self, websocket: WebSocket, event: dict[str, Any]) -> None:
        """One message's invocation; a function that fails is answered as API Gateway answers it."""
        try:
            await asyncio.to_thread(self._routes.invoke, event)
        except Exception:
            _log.exception("route %s failed", event["requestContext"]["routeKey"])
            context = event["requestContext"]
            failure = {
                "message": "Internal server error",
                "connectionId": context["connectionId"],
                "requestId": context["requestId"],
            }
            with contextlib.suppress(*_GONE):
                await websocket.send_text(json.dumps(failure))

    # -- the @connections management API -------------------------------------------------------------

    async def _manage(self, request: Request) -> Response:
        body = await request.body()
        # The path as sent (still percent-encoded), as AWS verifies it: connection ids hold + / =.
        raw_url = str(request.url.replace(path=request.scope["raw_path"].decode(), query=""))
        refusal = verify(
            self._credentials,
            request.method,
            raw_url,
            {name.lower(): value for name, value in request.headers.items()},
            body,
            service="execute-api",
        )
        if refusal is not None:
            _log.warning("refused @connections %s: %s", request.method, refusal)
            return JSONResponse({"message": "Forbidden"}, status_code=403)
        connection_id = request.path_params["connection_id"]
        connection = self._connections.get(connection_id)
        fault = self.faults.take(request.method, connection_id, body)
        if fault is not None:  # instead of the connection, throttled, failed, hung or gone
            await asyncio.sleep(fault.hang_seconds)
            if fault.status == GONE and connection is not None:  # API Gateway holds no such connection
                with contextlib.suppress(*_GONE):
                    await connection.websocket.close(code=GOING_AWAY)
            return JSONResponse({"message": f"local fault {fault.status}"}, status_code=fault.status)
        if connection is None:
            return JSONResponse({"message": "Gone"}, status_code=410)
        if request.method == "GET":
            return JSONResponse(
                {
                    "connectedAt": _iso(connection.connected_at),
                    "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
                    "lastActiveAt": _iso(connection.last_active_at),
                }
            )
        if len(body) > MESSAGE_BYTES and request.method == "POST":
            return JSONResponse({"message": "Message too long"}, status_code=413)
        # The client can leave at any moment, also between the lookup above and the send below (its
        # $disconnect is then on the way): that is a 410, as API Gateway answers, never a failure.
        try:
            if request.method == "DELETE":
                await connection.websocket.close(code=1000)
                return Response(status_code=204)
            try:
                text = body.decode()
            except UnicodeDecodeError:
                await connection.websocket.send_bytes(body)
            else:
                await connection.websocket.send_text(text)
        except _GONE:
            return JSONResponse({"message": "Gone"}, status_code=410)
        return Response(status_code=200)

    # -- event shapes ---------------------------------------------------------------------------------

    def _context(
        self, connection_id: str, route: str, event_type: str, source_ip: str, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        now = time.time()
        return {
            "routeKey": route,
            "eventType": event_type,
            "messageDirection": "IN",
            "messageId": str(uuid.uuid4()) if event_type == "MESSAGE" else None,
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "stage": STAGE,
            "connectedAt": int(now * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("user-agent", "")},
            "requestId": str(uuid.uuid4()),
            "domainName": self._host,
            "connectionId": connection_id,
            "apiId": API_ID,
        }

    def _authorizer_event(
        self, context: Mapping[str, Any], headers: Mapping[str, str], query: Mapping[str, str]
    ) -> dict[str, Any]:
        return {
            "type": "REQUEST",
            "methodArn": f"arn:aws:execute-api:local:{ACCOUNT}:{API_ID}/{STAGE}/$connect",
            "headers": dict(headers),
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "queryStringParameters": dict(query),
            "multiValueQueryStringParameters": {name: [value] for name, value in query.items()},
            "stageVariables": {},
            "requestContext": dict(context),
        }

    @staticmethod
    def _event(
        context: Mapping[str, Any],
        *,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "requestContext": {k: v for k, v in context.items() if v is not None},
            "isBase64Encoded": False,
        }
        if headers is not None:
            event["headers"] = dict(headers)
            event["multiValueHeaders"] = {name: [value] for name, value in headers.items()}
        if query:
            event["queryStringParameters"] = dict(query)
        if body is not None:
            event["body"] = body
        return event


# What sending to a client that has left raises: Starlette's WebSocketDisconnect (1006) for uvicorn's
# ClientDisconnected, an OSError before the handshake completed, a RuntimeError after a close was sent.
_GONE = (WebSocketDisconnect, OSError, RuntimeError)
_LOST = "Connection lost"


def _closed_by(message: Mapping[str, Any]) -> tuple[int, str]:
    """The status and reason of an ASGI disconnect. uvicorn reports a connection that was lost without
    a close frame as 1005 with no reason; RFC 6455 (7.1.5) calls that 1006."""
    if "reason" not in message and message.get("code", 1005) == 1005:
        return 1006, _LOST
    return int(message.get("code", 1005)), str(message.get("reason") or "Client closed")


def _route_of(body: str) -> str:
    try:
        action = json.loads(body).get("action")
    except (ValueError, AttributeError):
        return "$default"
    return action if isinstance(action, str) and action in ROUTES else "$default"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class GatewayProcess:
    """The gateway's process, as `make run` supervises it: started on a listening socket it passes on,
    and stoppable and startable again on the same port (the live page's outage switch). While stopped,
    the port is closed, so clients are refused, as by a gateway that is down."""

    def __init__(
        self,
        listening: socket.socket,
        options: list[str],
        on_metrics: Callable[[str], None] | None = None,
    ) -> None:
        self._socket: socket.socket | None = listening
        self._address = listening.getsockname()[:2]
        self._options = options
        self._on_metrics = on_metrics
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # stop and start come from request threads

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            if self._socket is None:
                self._socket = listen(*self._address)
            fd = self._socket.fileno()
            options, passed = ["--fd", str(fd), *self._options], [fd]
            if self._on_metrics is not None:
                metrics_read, metrics_write = os.pipe()
                options, passed = [*options, "--metrics-fd", str(metrics_write)], [*passed, metrics_write]
            # It inherits this environment (the handlers' configuration) and the listening socket.
            self._process = subprocess.Popen(
                [sys.executable, "-m", "local.gateway", *options], pass_fds=passed
            )
            if self._on_metrics is not None:
                os.close(metrics_write)  # the child holds the only writing end now: EOF when it ends
                threading.Thread(
                    target=_read_lines, args=(metrics_read, self._on_metrics), daemon=True
                ).start()

    def stop(self) -> None:
        """Ends the process (its connections close with 1012, as on any shutdown) and closes the port."""
        with self._lock:
            if self._process is not None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:  # its own shutdown is bounded; this is the backstop
                    _log.warning("gateway did not stop within %s s: killed", STOP_SECONDS)
                    self._process.kill()
                    self._process.wait()
                self._process = None
            if self._socket is not None:
                self._socket.close()
                self._socket = None


def _read_lines(fd: int, on_line: Callable[[str], None]) -> None:
    """Until the writing process has ended."""
    with open(fd, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            on_line(line.rstrip("\n"))


class _LinesTo:
    """Whole lines to a pipe from any thread; nothing once its reader has gone (the stack is stopping)."""

    def __init__(self, fd: int) -> None:
        self._pipe = open(fd, "w", encoding="utf-8")  # noqa: SIM115 - open as long as the process
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._pipe.write(line + "\n")
            self._pipe.flush()


def main() -> None:
    """The gateway process: `make run` binds its socket and passes it (--fd), with the handlers'
    environment already set, so it serves the same configuration as the rest of the local stack."""
    parser = argparse.ArgumentParser(description="The local WebSocket gateway (started by make run).")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket's file descriptor")
    parser.add_argument("--host", required=True, help="host:port clients use (the events' domainName)")
    parser.add_argument("--concurrency", type=int, default=4, help="execution environments per function")
    parser.add_argument("--sweep-seconds", type=float, default=5.0)
    parser.add_argument(
        "--connection-limit-seconds",
        type=float,
        default=WEBSOCKET_CONNECTION_LIMIT_SECONDS,
        help="close every connection this long after it opened (API Gateway: 2 hours)",
    )
    parser.add_argument(
        "--idle-timeout-seconds",
        type=float,
        default=WEBSOCKET_IDLE_TIMEOUT_SECONDS,
        help="close a connection whose client sent nothing for this long (API Gateway: 10 minutes)",
    )
    parser.add_argument("--metrics-fd", type=int, help="a pipe that takes the functions' EMF lines")
    args = parser.parse_args()
    console.install(None if args.metrics_fd is None else _LinesTo(args.metrics_fd))

    from handlers import websocket, ws_authorizer, ws_sweeper

    isolate_invocations()

    gateway = Gateway(
        authorizer=LocalFunction("ws-authorizer", ws_authorizer.handler, concurrency=args.concurrency),
        routes=LocalFunction(
            "websocket",
            websocket.handler,
            timeout_seconds=WEBSOCKET_TIMEOUT_SECONDS,
            concurrency=args.concurrency,
        ),
        credentials=LocalCredentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]),
        host=args.host,
        connection_limit_seconds=args.connection_limit_seconds,
        idle_timeout_seconds=args.idle_timeout_seconds,
    )
    sweeper = LocalFunction("ws-sweeper", ws_sweeper.handler)
    gc.freeze()  # see local/__main__.py
    listening = socket.socket(fileno=args.fd)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve((gateway.app(), listening), also=_alongside(every(sweeper, args.sweep_seconds))))


async def _alongside(*work: Awaitable[None]) -> None:
    await asyncio.gather(exit_with_parent(), *work)


if __name__ == "__main__":
    main()
