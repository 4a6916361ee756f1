"""Runs the deployed handler modules locally the way Lambda would: one invocation at a time per
function (one execution environment), with a context object and Function URL v2.0 events."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.serving import Background

ACCOUNT = "000000000000"

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
            return self._handler(event, LocalContext(self.name, timeout_seconds=self._timeout))


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
    """A Lambda Function URL (payload 2.0) event with IAM authorizer context."""
    from urllib.parse import parse_qsl

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
                    "callerId": access_key,
                    "userArn": caller_arn,
                    "userId": access_key,
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
    boto3's `invoke` (a publish function handing a chunk to the fan-out worker) works unchanged."""
    background = Background()

    async def invoke(request: Request) -> Response:
        function = functions.get(request.path_params["name"])
        if function is None:
            return JSONResponse({"Type": "User", "Message": "Function not found"}, status_code=404)
        event = json.loads(await request.body() or b"{}")
        if request.headers.get("x-amz-invocation-type") == "Event":
            background.spawn(asyncio.to_thread(function.invoke, event))
            return Response(status_code=202)
        return JSONResponse(await asyncio.to_thread(function.invoke, event))

    return Starlette(routes=[Route("/2015-03-31/functions/{name}/invocations", invoke, methods=["POST"])])
