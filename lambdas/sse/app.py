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

from handlers import composition
from streaming import cursor as cursors
from streaming.auth import AuthError, origin_allowed, redact, token_from_request
from streaming.errors import ErrorCode, StreamingError
from streaming.leases import StreamLeases
from streaming.observability import logger
from streaming.settings import SseSettings
from streaming.tail import StreamPlan, Tailer, subscription

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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
        plan, subject, lease = await asyncio.to_thread(_plan, request, query)
    except StreamingError as refused:
        logger.warning("sse refused", extra={"code": refused.error.code, "reason": refused.message, **client})
        return JSONResponse(refused.to_body(), status_code=refused.status)
    except Exception:  # the store or the signing key unavailable: a server fault, said as one
        logger.exception("sse failed", extra=client)
        failure = StreamingError(ErrorCode.INTERNAL_ERROR, "internal error; try again")
        return JSONResponse(failure.to_body(), status_code=failure.status)
    logger.info(
        "sse stream", extra={"subject": subject, "role": plan.role, "types": sorted(plan.types), **client}
    )
    body = _logged(subscription(composition.store(), _tailer(), plan), subject, lease)
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


async def _logged(body: AsyncIterator[bytes], subject: str, lease: str) -> AsyncIterator[bytes]:
    """The stream, and one log line when it ends: by its planned end, by a failure, or because the
    client went away. (uvicorn reports a client leaving and Starlette then cancels the stream; whether
    the Lambda Web Adapter passes that on is not verified: if not, a stream runs to its planned end.)"""
    started, how = time.monotonic(), "client left"
    try:
        async for chunk in body:
            if chunk.startswith(b"retry: ") and b"event: end" in chunk:
                how = "planned end"
            yield chunk
    except Exception:
        how = "failed"
        logger.exception("sse stream failed", extra={"subject": subject})
        raise
    finally:
        # Not awaited: a stream cancelled because its client left cannot await anything here.
        returned = asyncio.get_running_loop().run_in_executor(None, _leases().release, subject, lease)
        returned.add_done_callback(lambda done: _lease_returned(done, subject))
        seconds = round(time.monotonic() - started, 1)
        logger.info("sse stream closed", extra={"subject": subject, "how": how, "seconds": seconds})


def _lease_returned(done: asyncio.Future[None], subject: str) -> None:
    """A lease that could not be returned expires by itself a minute after the stream's planned end."""
    error = None if done.cancelled() else done.exception()
    if error is not None:
        logger.warning("sse lease not returned", extra={"subject": subject, "error": type(error).__name__})


def _plan(request: Request, query: dict[str, str]) -> tuple[StreamPlan, str, str]:
    """Who asks, for what, from where; StreamingError with the code to answer otherwise."""
    token_verifier, auth = composition.verifier()
    if not origin_allowed(request.headers.get("origin"), auth.allowed_origins):
        raise StreamingError(ErrorCode.ORIGIN_NOT_ALLOWED, "this origin may not subscribe")
    token, _ = token_from_request(dict(request.headers), query)
    try:
        principal = token_verifier.verify(token)
    except AuthError as refused:
        if refused.reason.startswith("signing key unavailable"):
            raise RuntimeError(refused.reason) from None  # our fault, not the token's
        code = ErrorCode.TOKEN_EXPIRED if refused.reason == "token expired" else ErrorCode.INVALID_TOKEN
        raise StreamingError(code, refused.reason) from None
    token_left = principal.expires_at - time.time()
    roles, streams_by_type = composition.settings().roles, composition.settings().streams_by_type
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
    heads = composition.store().heads()
    position = cursors.decode(resume) if resume else {s: seq for s, seq in heads.items() if s in streams}
    ahead = sorted(s for s, seq in position.items() if seq > heads.get(s, 0))
    if ahead:  # a cursor from a table that was reset, or from another deployment
        raise StreamingError(ErrorCode.INVALID_CURSOR, f"cursor is ahead of streams {ahead}")
    settings = _settings()
    # Never past the token: a stream whose token expires ends, and the client reconnects with a new one.
    lifetime = min(settings.max_stream_seconds, token_left)
    plan = StreamPlan(
        role=principal.role,
        types=types,
        streams=streams,
        position=position,
        heartbeat_seconds=settings.heartbeat_seconds,
        stall_seconds=settings.stall_seconds,
        max_stream_seconds=lifetime,
        retry_ms=settings.retry_ms,
        compress_above=settings.compress_above_bytes,
        ends_because="planned" if lifetime == settings.max_stream_seconds else "token_expiring",
    )
    lease = _leases().acquire(principal.subject, settings.max_streams_per_subject, lifetime)
    if lease is None:
        raise StreamingError(
            ErrorCode.TOO_MANY_STREAMS,
            f"this token's subject has {settings.max_streams_per_subject} streams open already",
        )
    return plan, principal.subject, lease


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[Route("/events", events, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])]
)
