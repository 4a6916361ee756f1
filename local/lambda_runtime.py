"""Runs the deployed handler modules locally the way Lambda would: one invocation at a time per
function (one execution environment), with a context object and Function URL v2.0 events.

In Lambda every execution environment is a process of its own; locally the functions share a process
and run in threads, and so share the one Powertools logger of `streaming.observability`. Each
invocation (and each request of the SSE app) therefore keeps the keys its log lines carry in a
context of its own (`isolate_invocations`): a line says which function wrote it, not which function
last ran.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar, copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from stacks.config import Cors

from local import console
from local.serving import Background

ACCOUNT = "000000000000"
_log = logging.getLogger("local.lambda")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class LocalContext:
    """The attributes of the Lambda context object the handlers and Powertools read."""

    function_name: str
    timeout_seconds: int = 30
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:{ACCOUNT}:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalFunction:
    """A function with `concurrency` execution environments: at most that many invocations at once."""

    def __init__(
        self, name: str, handler: Handler, *, timeout_seconds: int = 30, concurrency: int = 1
    ) -> None:
        self.name = name
        self._handler = handler
        self._timeout = timeout_seconds
        self._environments = threading.BoundedSemaphore(concurrency)

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        with self._environments:
            context = LocalContext(self.name, timeout_seconds=self._timeout)
            return copy_context().run(self._run, event, context)

    def _run(self, event: dict[str, Any], context: LocalContext) -> dict[str, Any]:
        _invocation.set({})  # the handler's inject_lambda_context then adds its keys to this one
        return self._handler(event, context)


# -- Powertools state per invocation ----------------------------------------------------------------

# Per invocation, the attributes of Powertools' shared objects that it changes: {(object id, name):
# value}. None outside any invocation (at import, in the handlers' own thread pools), where the
# objects' own attributes apply.
_invocation: ContextVar[dict[tuple[int, str], Any] | None] = ContextVar("local_invocation", default=None)


class _PerInvocation:
    """Stands for an attribute of a shared object: inside an invocation, reads start from a copy of
    the object's own value and writes stay in the invocation. A data descriptor, so Powertools'
    reassignments (the logger's clear_state at the start of each invocation) are caught too."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        state = _invocation.get()
        if instance is None or state is None:
            return self if instance is None else instance.__dict__[self.name]
        key = (id(instance), self.name)
        if key not in state:
            state[key] = copy.copy(instance.__dict__[self.name])
        return state[key]

    def __set__(self, instance: Any, value: Any) -> None:
        state = _invocation.get()
        if state is None:
            instance.__dict__[self.name] = value
        else:
            state[(id(instance), self.name)] = value


def _per_invocation(instance: Any, *names: str) -> None:
    cls = type(instance)
    if not all(isinstance(cls.__dict__.get(name), _PerInvocation) for name in names):
        attributes = {name: _PerInvocation() for name in names}
        instance.__class__ = type(f"PerInvocation{cls.__name__}", (cls,), attributes)


def isolate_invocations() -> None:
    """Give every local invocation its own log keys and metrics (call once the handlers are imported)."""
    from streaming.observability import logger, metrics

    # The keys every log line carries; the metrics, dimensions and metadata the next flush prints.
    _per_invocation(logger.registered_formatter, "log_format")
    _per_invocation(metrics.provider, "metric_set", "dimension_set", "metadata_set", "dimension_sets")


def function_url_cors(app: ASGIApp, cors: Cors) -> ASGIApp:
    """What a Function URL with CORS adds in front of its function (the construct's configuration,
    `EnvironmentConfig.sse_cors`): preflight answered without invoking it, and `Access-Control-Allow-
    Origin` on every response, streamed or refused, to an allowed origin; nothing for any other."""
    return CORSMiddleware(
        app,
        allow_origins=list(cors.allowed_origins),
        allow_methods=list(cors.allowed_methods),
        allow_headers=list(cors.allowed_headers),
        max_age=cors.max_age_seconds,
    )


def function_app(app: ASGIApp, name: str, *, memory_mb: int, timeout_seconds: int) -> ASGIApp:
    """An ASGI app run as a function behind the Lambda Web Adapter (the SSE app): each HTTP request is
    one invocation, and its log lines carry that function's context, as a handler's do. A request
    still running at `timeout_seconds` is ended as Lambda ends it: cut, unheard."""
    from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model

    from streaming.observability import logger

    async def invocation(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        # Each request runs in a task (and context) of its own.
        context = LocalContext(name, timeout_seconds=timeout_seconds, memory_limit_in_mb=memory_mb)
        _invocation.set({})
        output = console.Output()
        console.invocation_output.set(output)
        logger.append_keys(**build_lambda_context_model(context).__dict__)
        task = asyncio.current_task()
        assert task is not None

        def time_out() -> None:
            # Lambda ends the invocation where it is: the response is cut without its end, and the
            # function is heard no more (its clean-up runs here, but prints nothing).
            output.heard = False
            task.cancel()

        deadline = asyncio.get_running_loop().call_later(timeout_seconds, time_out)
        try:
            await app(scope, receive, send)
        except asyncio.CancelledError:
            if output.heard:
                raise
            task.uncancel()
            console.invocation_output.set(None)
            _log.error("%s: Task timed out after %.2f seconds", name, timeout_seconds)  # as Lambda logs
        finally:
            deadline.cancel()

    return invocation


def function_url_event(
    *,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
    source_ip: str,
    caller_arn: str,
    access_key: str,
) -> dict[str, Any]:
    """A Lambda Function URL (payload 2.0) event with IAM authorizer context: as AWS gives it, the
    caller's ARN and its unique id (an IAM user's AIDA..., here derived from the ARN), which is not the
    access key."""
    from urllib.parse import parse_qsl

    unique_id = "AIDA" + hashlib.sha256(caller_arn.encode()).hexdigest()[:17].upper()

    now = time.time()
    try:
        text, encoded = body.decode(), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "local",
            "authorizer": {
                "iam": {
                    "accessKey": access_key,
                    "accountId": ACCOUNT,
                    "callerId": unique_id,
                    "userArn": caller_arn,
                    "userId": unique_id,
                }
            },
            "domainName": headers.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": text,
        "isBase64Encoded": encoded,
    }
    if query:
        event["queryStringParameters"] = dict(parse_qsl(query, keep_blank_values=True))
    return event


def invoke_app(functions: Mapping[str, LocalFunction]) -> Starlette:
    """Lambda's Invoke API (POST /2015-03-31/functions/{name}/invocations) for the local functions, so
    boto3's `invoke` works unchanged: a publish function handing a chunk to the fan-out worker, and
    tests playing EventBridge for the EventBridge function (moto's bus has no Lambda target). A handler
    that raises is answered as Lambda answers it: 200, `X-Amz-Function-Error: Unhandled` and the error."""
    background = Background()

    async def invoke(request: Request) -> Response:
        function = functions.get(request.path_params["name"])
        if function is None:
            return JSONResponse({"Type": "User", "Message": "Function not found"}, status_code=404)
        event = json.loads(await request.body() or b"{}")
        if request.headers.get("x-amz-invocation-type") == "Event":
            background.spawn(asyncio.to_thread(_invoked, function, event))
            return Response(status_code=202)
        result, failed = await asyncio.to_thread(_invoked, function, event)
        return JSONResponse(result, headers={"X-Amz-Function-Error": "Unhandled"} if failed else None)

    return Starlette(routes=[Route("/2015-03-31/functions/{name}/invocations", invoke, methods=["POST"])])


def _invoked(function: LocalFunction, event: dict[str, Any]) -> tuple[Any, bool]:
    try:
        return function.invoke(event), False
    except Exception as error:  # what Lambda's runtime logs, and returns to a synchronous caller
        _log.exception("%s: unhandled %s", function.name, type(error).__name__)
        return {"errorMessage": str(error), "errorType": type(error).__name__}, True
