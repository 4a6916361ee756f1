"""GET /events: one SSE subscription (docs/protocol.md, "Server-Sent Events"). GET /healthz for the
adapter's readiness check.

Query: `types` (comma-separated; default: everything the role may see), `cursor` (to resume; a
`Last-Event-ID` header, which EventSource sends by itself on reconnect, takes precedence), `token`
(for EventSource, which cannot send headers; otherwise `Authorization: Bearer`). Tokens are never
logged: the query is logged redacted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import cache, partial

from aws_lambda_powertools.metrics import MetricUnit
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from handlers import composition
from streaming.auth import KeyUnavailable, redact, token_from_request
from streaming.errors import ErrorCode, StreamingError
from streaming.leases import StreamLeases
from streaming.listeners import websocket_connection
from streaming.observability import count, logger
from streaming.relay import READY_SECONDS, Relay
from streaming.settings import SseSettings
from streaming.sse_plan import PlannedStream, StreamPlan, StreamRequest, Unauthenticated, plan_stream
from streaming.subscription import Ending, Subscription
from streaming.tail import LiveTail, Tailer

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PUSH_KEEPALIVE_SECONDS = 10.0  # a relay's connection that answers no WebSocket ping this long is dead


@cache
def _settings() -> SseSettings:
    return SseSettings.from_env()


@cache
def _leases() -> StreamLeases:
    return StreamLeases(composition.dynamodb(), _settings().streams_table)


@cache
def _tailer() -> Tailer:
    streams_by_type = composition.settings().streams_by_type
    return Tailer(composition.store(), streams_by_type, _settings().poll_interval_ms / 1000)


async def events(request: Request) -> Response:
    query = dict(request.query_params)
    client = {"query": redact(query), "source_ip": request.client.host if request.client else None}
    try:
        planned = await asyncio.to_thread(_plan, request, query)
    except StreamingError as refused:
        logger.warning("sse refused", extra={"code": refused.error.code, "reason": refused.message, **client})
        if isinstance(refused, Unauthenticated):
            _count_auth_failure(refused.kind)
        return JSONResponse(refused.to_body(), status_code=refused.status)
    except Exception as error:  # the store or the signing key unavailable: a server fault, said as one
        logger.exception("sse failed", extra=client)
        if isinstance(error, KeyUnavailable):
            _count_auth_failure(error.kind)
        failure = StreamingError(ErrorCode.INTERNAL_ERROR, "internal error; try again")
        return JSONResponse(failure.to_body(), status_code=failure.status)
    plan, subject = planned.plan, planned.subject
    logger.info(
        "sse stream", extra={"subject": subject, "role": plan.role, "types": sorted(plan.types), **client}
    )
    count("ConnectionsOpened", role=plan.role, transport="sse")
    still_leased = partial(_leases().held, subject, planned.lease)
    coalescing = composition.settings().coalescing
    live = _live(plan, token_from_request(dict(request.headers), query)[0] or "")
    stream = Subscription(composition.store(), live, plan, still_leased=still_leased, coalescing=coalescing)
    body = _logged(stream, subject, planned.lease, live)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


def _live(plan: StreamPlan, token: str) -> LiveTail:
    """Where the stream's live events come from: pushed by the WebSocket API to a connection of its own,
    opened with the subscriber's token (sse.push), else the process's polling tailer."""
    url = _settings().push_url
    if not url:
        return _tailer()
    connect = partial(
        websocket_connection,
        url,
        token,
        open_timeout=READY_SECONDS,
        keepalive_seconds=PUSH_KEEPALIVE_SECONDS,
    )
    return Relay(connect, _tailer(), plan.types, patience=plan.heartbeat_seconds)


def _count_auth_failure(kind: str) -> None:
    count("AuthFailures", transport="sse", reason=kind)
    count("AuthFailures")  # the total, which the alarm watches


# The log's `how`: a stream that wrote its end event ended as planned, stalled or not (a stall is
# logged when it happens), unless a newer stream of its subject replaced it.
_HOW = {
    Ending.PLANNED: "planned end",
    Ending.STALLED: "planned end",
    Ending.REPLACED: "replaced",
    Ending.CLIENT_LEFT: "client left",
    Ending.FAILED: "failed",
}


async def _logged(stream: Subscription, subject: str, lease: str, live: LiveTail) -> AsyncIterator[bytes]:
    """The stream, and one log line when it ends: by its planned end, by a failure, or because the
    client went away. (uvicorn reports a client leaving and Starlette then cancels the stream; whether
    the Lambda Web Adapter passes that on is not verified: if not, a stream runs to its planned end.)"""
    started = time.monotonic()
    try:
        async for chunk in stream:
            yield chunk
    except Exception:
        logger.exception("sse stream failed", extra={"subject": subject})
        raise
    finally:
        if isinstance(live, Relay):
            live.close()
        # Not awaited: a stream cancelled because its client left cannot await anything here.
        returned = asyncio.get_running_loop().run_in_executor(None, _leases().release, subject, lease)
        returned.add_done_callback(lambda done: _lease_returned(done, subject))
        seconds = round(time.monotonic() - started, 1)
        how = _HOW[stream.ending]
        logger.info("sse stream closed", extra={"subject": subject, "how": how, "seconds": seconds})
        count("ConnectionsClosed", transport="sse")
        count("SseStreamsEnded", ending=stream.ending.value)  # an Ending: planned, replaced, ...
        count("Disconnects", transport="sse", kind=stream.ending.kind)
        count("SseStreamSeconds", seconds, MetricUnit.Seconds)


def _lease_returned(done: asyncio.Future[None], subject: str) -> None:
    """A lease that could not be returned expires by itself a minute after the stream's planned end."""
    error = None if done.cancelled() else done.exception()
    if error is not None:
        logger.warning("sse lease not returned", extra={"subject": subject, "error": type(error).__name__})


def _plan(request: Request, query: dict[str, str]) -> PlannedStream:
    """The request's inputs, read from HTTP, planned by the domain (in a thread: it reads the store)."""
    token_verifier, auth = composition.verifier()
    token, _ = token_from_request(dict(request.headers), query)
    asked = StreamRequest(
        origin=request.headers.get("origin"),
        token=token,
        types=query.get("types", ""),
        resume=request.headers.get("last-event-id") or query.get("cursor"),
    )
    base = composition.settings()
    return plan_stream(
        asked,
        verifier=token_verifier,
        allowed_origins=auth.allowed_origins,
        roles=base.roles,
        streams_by_type=base.streams_by_type,
        heads=composition.store().heads,
        leases=_leases(),
        settings=_settings(),
    )


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/events", events, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])]
)
