"""The local publish endpoint: the Function URL in front of handlers.publish_http, on loopback."""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from local.lambda_runtime import ACCOUNT, LocalFunction, function_url_event
from local.sigv4 import verify
from local.state import LocalCredentials

_log = logging.getLogger("local.publish")


def publish_app(function: LocalFunction, credentials: LocalCredentials) -> Starlette:
    async def invoke(request: Request) -> Response:
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        refusal = verify(credentials, request.method, str(request.url), headers, body)
        if refusal is not None:
            # What a Function URL answers; the reason is only logged here.
            _log.warning("refused %s %s: %s", request.method, request.url.path, refusal)
            return Response(
                json.dumps({"Message": "Forbidden"}), status_code=403, media_type="application/json"
            )
        event = function_url_event(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=headers,
            body=body,
            source_ip=request.client.host if request.client else "127.0.0.1",
            caller_arn=f"arn:aws:iam::{ACCOUNT}:user/local-publisher",
            access_key=credentials.access_key_id,
        )
        result = await asyncio.to_thread(function.invoke, event)
        return Response(
            result.get("body", ""),
            status_code=result.get("statusCode", 200),
            headers={k: v for k, v in (result.get("headers") or {}).items() if k.lower() != "content-length"},
        )

    return Starlette(
        routes=[Route("/{path:path}", invoke, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
    )
