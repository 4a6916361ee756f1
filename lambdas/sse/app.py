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
from functools import cache

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from streaming import cursor as cursors
from streaming.auth import AuthError, origin_allowed, redact, token_from_request
from streaming.errors import ErrorCode, StreamingError
from streaming.observability import logger
from streaming.runtime import services, verifier
from streaming.settings import SseSettings
from streaming.tail import StreamPlan, Tailer, subscription

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@cache
def _settings() -> SseSettings:
    return SseSettings.from_env()


@cache
def _tailer() -> Tailer:
    base = services()
    return Tailer(base.store, base.settings.streams_by_type, _settings().poll_interval_ms / 1000)


async def events(request: Request) -> Response:
    query = dict(request.query_params)
    try:
        plan = await asyncio.to_thread(_plan, request, query)
    except StreamingError as refused:
        logger.warning(
            "sse refused",
            extra={"code": refused.error.code, "reason": refused.message, "query": redact(query)},
        )
        return JSONResponse(refused.to_body(), status_code=refused.status)
    logger.info("sse stream", extra={"role": plan.role, "types": sorted(plan.types), "query": redact(query)})
    body = _logged(subscription(services().store, _tailer(), plan))
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


async def _logged(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The stream, and one log line when it ends: by its planned end, or cancelled because the client
    went away (Starlette then cancels the response, and this stream stops reading the store)."""
    started, planned = time.monotonic(), False
    try:
        async for chunk in body:
            planned = chunk.startswith(b"retry: ") and b"event: end" in chunk
            yield chunk
    finally:
        how = "planned end" if planned else "client left"
        logger.info("sse stream closed", extra={"how": how, "seconds": round(time.monotonic() - started, 1)})


def _plan(request: Request, query: dict[str, str]) -> StreamPlan:
    """Who asks, for what, from where; StreamingError with the code to answer otherwise."""
    token_verifier, auth = verifier()
    if not origin_allowed(request.headers.get("origin"), auth.allowed_origins):
        raise StreamingError(ErrorCode.ORIGIN_NOT_ALLOWED, "this origin may not subscribe")
    token, _ = token_from_request(dict(request.headers), query)
    try:
        principal = token_verifier.verify(token)
    except AuthError as refused:
        code = ErrorCode.TOKEN_EXPIRED if refused.reason == "token expired" else ErrorCode.INVALID_TOKEN
        raise StreamingError(code, refused.reason) from None
    base = services()
    roles, streams_by_type = base.settings.roles, base.settings.streams_by_type
    requested = [t for t in query.get("types", "").split(",") if t] or None
    if requested:
        unknown = sorted(set(requested) - set(streams_by_type))
        if unknown:
            raise StreamingError(ErrorCode.UNKNOWN_TYPE, f"unknown event types {unknown}")
        forbidden = sorted(set(requested) - roles.allowed(principal.role))
        if forbidden:
            raise StreamingError(ErrorCode.TYPE_NOT_ALLOWED, f"role {principal.role} may not see {forbidden}")
    types = roles.visible(principal.role, requested)
    streams = frozenset(streams_by_type[t] for t in types)
    resume = request.headers.get("last-event-id") or query.get("cursor")
    if resume:
        position = cursors.decode(resume)
    else:  # live from now on
        position = {stream: seq for stream, seq in base.store.heads().items() if stream in streams}
    settings = _settings()
    # Never past the token: a stream whose token expires ends, and the client reconnects with a new one.
    lifetime = min(settings.max_stream_seconds, max(1, principal.expires_at - int(time.time())))
    return StreamPlan(
        role=principal.role,
        types=types,
        streams=streams,
        position=position,
        heartbeat_seconds=settings.heartbeat_seconds,
        max_stream_seconds=lifetime,
        retry_ms=settings.retry_ms,
        compress_above=settings.compress_above_bytes,
    )


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/events", events, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])]
)
