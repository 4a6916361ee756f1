"""What an SSE request may stream (docs/protocol.md, "Server-Sent Events"): who asks, for which types,
from where, for how long. A refusal is a StreamingError with the code to answer; anything else raised
here (the store, the leases or the signing key unavailable) is the server's fault."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from streaming import cursor as cursors
from streaming.auth import (
    AuthError,
    KeyUnavailable,
    OriginNotAllowed,
    Principal,
    TokenVerifier,
    origin_allowed,
)
from streaming.errors import ErrorCode, StreamingError
from streaming.leases import StreamLeases
from streaming.protocol import known_types
from streaming.roles import RoleMatrix
from streaming.settings import SseSettings


@dataclass(frozen=True)
class StreamRequest:
    """What the client sent, as read from the HTTP request."""

    origin: str | None
    token: str | None
    types: str  # comma-separated, as in the query; empty: every type the role may see
    resume: str | None  # Last-Event-ID, else the `cursor` query parameter


@dataclass(frozen=True)
class StreamPlan:
    role: str
    types: frozenset[str]
    streams: frozenset[str]
    position: cursors.Position  # where the subscriber is: everything up to it was delivered before
    heartbeat_seconds: float
    stall_seconds: float  # a stream that could write nothing for this long ends itself
    max_stream_seconds: float
    retry_ms: int
    compress_above: int
    ends_because: str = "planned"  # or "token_expiring": reconnect with a new token (or "stalled")


class Unauthenticated(StreamingError):
    """A refusal of who asks (token or origin), answered with its code and counted by its kind."""

    def __init__(self, refused: AuthError) -> None:
        super().__init__(refused.code, refused.reason)
        self.kind = refused.kind


@dataclass(frozen=True)
class PlannedStream:
    plan: StreamPlan
    subject: str
    lease: str  # the subject's place among its open streams: released when the stream ends


def plan_stream(
    request: StreamRequest,
    *,
    verifier: TokenVerifier,
    allowed_origins: Iterable[str],
    roles: RoleMatrix,
    streams_by_type: Mapping[str, str],
    heads: Callable[[], cursors.Position],
    leases: StreamLeases,
    settings: SseSettings,
) -> PlannedStream:
    """The plan of the stream `request` asks for, holding a lease; StreamingError otherwise."""
    if not origin_allowed(request.origin, allowed_origins):
        raise Unauthenticated(OriginNotAllowed("this origin may not subscribe", "origin"))
    principal = _verified(verifier, request.token)
    token_left = principal.expires_at - time.time()
    types = _visible_types(request.types, principal.role, roles, streams_by_type)
    streams = frozenset(streams_by_type[t] for t in types)
    position = _position(request.resume, streams, heads())
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
    # At its cap the subject's oldest streams make room for this one once they are a heartbeat interval
    # old: each notices at its next heartbeat, so one subject never runs more than twice its cap.
    lease = leases.acquire(
        principal.subject,
        settings.max_streams_per_subject,
        lifetime,
        role=principal.role,
        replaceable_after=settings.heartbeat_seconds,
    )
    if lease is None:
        raise StreamingError(
            ErrorCode.TOO_MANY_STREAMS,
            f"this token's subject opened {settings.max_streams_per_subject} streams within "
            f"{settings.heartbeat_seconds:g} s: try again in a few seconds",
        )
    return PlannedStream(plan, principal.subject, lease)


def _verified(verifier: TokenVerifier, token: str | None) -> Principal:
    try:
        return verifier.verify(token)
    except KeyUnavailable:
        raise  # not the token's fault: answered as a server fault
    except AuthError as refused:
        raise Unauthenticated(refused) from None


def _visible_types(
    requested: str, role: str, roles: RoleMatrix, streams_by_type: Mapping[str, str]
) -> frozenset[str]:
    """The types asked for (all the role may see if none); a type the role may not see is refused,
    not dropped."""
    names = [t for t in requested.split(",") if t]
    if not names:
        return roles.visible(role)
    asked = known_types(names, streams_by_type)
    forbidden = sorted(asked - roles.allowed(role))
    if forbidden:
        raise StreamingError(ErrorCode.TYPE_NOT_ALLOWED, f"role {role} may not see {forbidden}")
    return roles.visible(role, asked)


def _position(resume: str | None, streams: frozenset[str], heads: cursors.Position) -> cursors.Position:
    """Where the stream starts: the cursor to resume from, else the current heads of its streams."""
    position = cursors.decode(resume) if resume else {s: seq for s, seq in heads.items() if s in streams}
    ahead = sorted(s for s, seq in position.items() if seq > heads.get(s, 0))
    if ahead:  # a cursor from a table that was reset, or from another deployment
        raise StreamingError(ErrorCode.INVALID_CURSOR, f"cursor is ahead of streams {ahead}")
    return position
