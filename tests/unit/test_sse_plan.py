"""What an SSE request may stream: each refusal with its code, and a signing key that cannot be had
as the server's fault (the HTTP answers are tested end to end in tests/integration/test_sse.py)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from streaming import cursor as cursors
from streaming.auth import KeyUnavailable, TokenPolicy, TokenVerifier
from streaming.errors import ErrorCode, StreamingError
from streaming.settings import SseSettings
from streaming.sse_plan import StreamRequest, plan_stream

pytestmark = pytest.mark.connections
SECRET = "s" * 48
ORIGIN = "https://app.example.com"
SSE = SseSettings(
    poll_interval_ms=500,
    heartbeat_seconds=15,
    max_stream_seconds=600,
    retry_ms=1500,
    compress_above_bytes=8192,
    max_streams_per_subject=1,
    streams_table="connections",
)


class Leases:
    """Streams per subject, in memory, none old enough to be replaced."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.replaceable_after: list[float] = []

    def acquire(
        self, subject: str, limit: int, seconds: float, *, role: str, replaceable_after: float
    ) -> str | None:
        self.replaceable_after.append(replaceable_after)
        if self.held.get(subject, 0) >= limit:
            return None
        self.held[subject] = self.held.get(subject, 0) + 1
        return f"lease-{subject}"


def token(role: str = "viewer", seconds_left: int = 3600) -> str:
    claims = {"iss": "streaming-dev", "aud": "streaming", "sub": "alice", "role": role}
    return jwt.encode({**claims, "exp": int(time.time()) + seconds_left}, SECRET, algorithm="HS256")


def planned(settings: Any, keys: Any = lambda _header: SECRET, leases: Any = None, **asked: Any) -> Any:
    request = StreamRequest(
        **{"origin": None, "token": token(), "types": "", "resume": None, **asked}  # type: ignore[arg-type]
    )
    return plan_stream(
        request,
        verifier=TokenVerifier(TokenPolicy(audience="streaming", issuer="streaming-dev"), keys, ["viewer"]),
        allowed_origins=[ORIGIN],
        roles=settings.roles,
        streams_by_type=settings.streams_by_type,
        heads=lambda: {"market": 5, "risk": 2},
        leases=leases or Leases(),
        settings=SSE,
    )


def refusal(settings: Any, **asked: Any) -> str:
    with pytest.raises(StreamingError) as refused:
        planned(settings, **asked)
    return refused.value.error.code


def test_a_viewer_streams_what_it_may_see_from_the_heads_until_its_planned_end(settings):
    stream = planned(settings, origin=ORIGIN)
    assert stream.plan.types == settings.roles.allowed("viewer")
    assert (stream.plan.streams, stream.plan.position) == ({"market"}, {"market": 5})
    assert (stream.plan.ends_because, stream.plan.max_stream_seconds) == ("planned", 600)
    assert (stream.subject, stream.lease) == ("alice", "lease-alice")
    soon = planned(settings, token=token(seconds_left=60)).plan
    assert soon.ends_because == "token_expiring" and soon.max_stream_seconds <= 60


def test_each_refusal_carries_its_code(settings):
    assert refusal(settings, token=None) == ErrorCode.INVALID_TOKEN.code
    assert refusal(settings, token=token(seconds_left=-120)) == ErrorCode.TOKEN_EXPIRED.code
    assert refusal(settings, token=token(seconds_left=2)) == ErrorCode.TOKEN_EXPIRED.code
    assert refusal(settings, origin="https://evil.example") == ErrorCode.ORIGIN_NOT_ALLOWED.code
    assert refusal(settings, types="signal.created,order.filled") == ErrorCode.UNKNOWN_TYPE.code
    assert refusal(settings, types="signal.created,risk.alert") == ErrorCode.TYPE_NOT_ALLOWED.code
    assert refusal(settings, resume="c1.not-ours") == ErrorCode.INVALID_CURSOR.code
    assert refusal(settings, resume=cursors.encode({"market": 6})) == ErrorCode.INVALID_CURSOR.code


def test_a_signing_key_that_cannot_be_had_is_the_servers_fault_not_a_refusal(settings):
    def unavailable(_header: Any) -> str:
        raise KeyUnavailable("signing key unavailable (ThrottlingException)")

    with pytest.raises(KeyUnavailable):
        planned(settings, keys=unavailable)


def test_a_subject_whose_streams_are_too_young_to_be_replaced_is_refused(settings):
    """Leases make room for a new stream by replacing the subject's oldest, once a heartbeat interval
    old (tests/unit/test_leases.py); when none is, the new stream is refused."""
    leases = Leases()
    leases.held["alice"] = SSE.max_streams_per_subject
    with pytest.raises(StreamingError) as refused:
        planned(settings, leases=leases)
    assert refused.value.error is ErrorCode.TOO_MANY_STREAMS
    assert leases.replaceable_after == [SSE.heartbeat_seconds]
