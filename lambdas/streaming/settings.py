"""Runtime settings, read once from the environment the stack (or the local stack) sets.

Each settings group is one dataclass whose fields declare their environment variable (streaming.environment
derives `from_env`, `to_env` and the bounds check from that declaration, and stacks/config.py takes its
pydantic bounds from it too, `limits`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

from streaming import constants as c
from streaming.coalesce import Coalescing
from streaming.environment import (
    GRANTS,
    INTEGER,
    JSON_LIST,
    NUMBER,
    RATES,
    STREAMS,
    EnvSettings,
    Limits,
    env_var,
)
from streaming.events import EventCatalog
from streaming.roles import RoleMatrix

AuthMode = Literal["hs256", "oidc"]


# Both transports compress above the same size and keep their records in the connections table.
_COMPRESS_ABOVE_BYTES = Limits(ge=256)


@dataclass(frozen=True)
class Settings(EnvSettings):
    events_table: str = env_var(c.ENV_EVENTS_TABLE)
    streams_by_type: Mapping[str, str] = env_var(c.ENV_EVENT_STREAMS, STREAMS)
    role_grants: Mapping[str, tuple[str, ...]] = env_var(c.ENV_ROLE_MATRIX, GRANTS)
    replay_window_seconds: int = env_var(
        c.ENV_REPLAY_WINDOW_SECONDS, INTEGER, limits=Limits(ge=3600, le=365 * 24 * 3600)
    )
    # API Gateway WebSocket messages are at most 128 KB.
    max_event_bytes: int = env_var(c.ENV_MAX_EVENT_BYTES, INTEGER, limits=Limits(ge=256, le=120_000))
    max_batch_events: int = env_var(c.ENV_MAX_BATCH_EVENTS, INTEGER, limits=Limits(ge=1, le=1000))
    # Live delivery to a subscriber with more events than this pending coalesces superseded events of
    # these types by key; the SSE tailer keeps at most 1000 per stream, and beyond that is replay.
    coalesce_types: tuple[str, ...] = env_var(c.ENV_COALESCE_TYPES, JSON_LIST)
    must_deliver_types: tuple[str, ...] = env_var(c.ENV_MUST_DELIVER_TYPES, JSON_LIST)
    coalesce_above_events: int = env_var(c.ENV_COALESCE_ABOVE_EVENTS, INTEGER, limits=Limits(ge=1, le=1000))

    def _rules(self) -> list[str]:
        problems = coalescing_problems(self.coalesce_types, self.must_deliver_types, self.streams_by_type)
        for event_type, stream in self.streams_by_type.items():
            if not re.match(c.STREAM_NAME_PATTERN, stream):
                problems.append(f"stream {stream!r} of {event_type} does not match {c.STREAM_NAME_PATTERN}")
        for role, types in self.role_grants.items():
            unknown = set(types) - set(self.streams_by_type)
            if unknown:
                problems.append(f"role {role} grants unknown types {sorted(unknown)}")
        return problems

    @cached_property
    def catalog(self) -> EventCatalog:
        return EventCatalog.load(frozenset(self.streams_by_type))

    @cached_property
    def roles(self) -> RoleMatrix:
        return RoleMatrix(self.role_grants)

    @cached_property
    def coalescing(self) -> Coalescing:
        return Coalescing(frozenset(self.coalesce_types), self.coalesce_above_events)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body worth parsing: a full batch of full events plus envelope overhead."""
        return self.max_batch_events * (self.max_event_bytes + 1024)


def coalescing_problems(
    coalesce: tuple[str, ...] | list[str], must_deliver: tuple[str, ...] | list[str], known: Mapping[str, str]
) -> list[str]:
    """What makes a coalescing policy wrong: unknown types, or a must-deliver type coalesced (at synth,
    stacks/config.py asks the same)."""
    problems = []
    unknown = sorted((set(coalesce) | set(must_deliver)) - set(known))
    if unknown:
        problems.append(f"coalescing names unknown types {unknown}")
    demoted = sorted((c.ALWAYS_MUST_DELIVER & set(known)) - set(must_deliver))
    if demoted:
        problems.append(f"{demoted} must always be must-deliver")
    both = sorted(set(coalesce) & set(must_deliver))
    if both:
        problems.append(f"{both} are must-deliver and can never be coalesced")
    return problems


@dataclass(frozen=True)
class PublishRateSettings(EnvSettings):
    """Each HTTP publisher's token bucket: `rate` events per second refill a bucket of `burst` events;
    `overrides` gives named principals (IAM user or role ARNs) a (rate, burst) of their own."""

    rate: float = env_var(c.ENV_PUBLISH_RATE, NUMBER, limits=Limits(gt=0))
    burst: int = env_var(c.ENV_PUBLISH_BURST, INTEGER, limits=Limits(ge=1))
    overrides: Mapping[str, tuple[float, int]] = env_var(
        c.ENV_PUBLISH_RATE_OVERRIDES, RATES, optional=True, default=""
    )

    def _rules(self) -> list[str]:
        bad = {p: r for p, r in (self.overrides or {}).items() if not (r[0] > 0 and r[1] >= 1)}
        if not bad:
            return []
        return [f"{c.ENV_PUBLISH_RATE_OVERRIDES} needs rates above 0 and bursts of 1 or more: {bad}"]

    def of(self, principal: str) -> tuple[float, int]:
        """The (rate, burst) of `principal`."""
        return (self.overrides or {}).get(principal, (self.rate, self.burst))


@dataclass(frozen=True)
class DeliverySettings(EnvSettings):
    """Live delivery over the WebSocket API: where connections are kept and how to reach them."""

    connections_table: str = env_var(c.ENV_CONNECTIONS_TABLE)
    # the stage's @connections endpoint, https://{api}.execute-api.../{stage}
    management_url: str = env_var(c.ENV_MANAGEMENT_URL)
    # audiences up to this size are delivered inline
    fanout_chunk_connections: int = env_var(
        c.ENV_FANOUT_CHUNK_CONNECTIONS, INTEGER, limits=Limits(ge=10, le=c.MAX_FANOUT_CHUNK_CONNECTIONS)
    )
    # event data larger than this (as JSON) is sent gzip-compressed
    compress_above_bytes: int = env_var(c.ENV_COMPRESS_ABOVE_BYTES, INTEGER, limits=_COMPRESS_ABOVE_BYTES)
    # inbound token bucket per connection
    messages_per_second: float = env_var(c.ENV_WS_MESSAGES_PER_SECOND, NUMBER, limits=Limits(gt=0))
    burst: int = env_var(c.ENV_WS_BURST, INTEGER, limits=Limits(ge=1))
    # a connection expires this long after it opened at the latest (its token may expire sooner); API
    # Gateway's fixed limit less one sweep, shortened only where a test runs the local stack
    max_connection_seconds: int = env_var(
        c.ENV_WS_MAX_CONNECTION_SECONDS,
        INTEGER,
        limits=Limits(ge=10, le=c.MAX_CONNECTION_SECONDS),
        default=c.MAX_CONNECTION_SECONDS,
    )
    # worker invoked asynchronously per chunk of a large audience; named only to the functions that
    # hand chunks on
    fanout_function: str = env_var(c.ENV_FANOUT_FUNCTION, optional=True, default="")


@dataclass(frozen=True)
class AuthSettings(EnvSettings):
    """How tokens are verified: "hs256" with the secret at `secret_arn`, or "oidc" with `jwks_url`."""

    mode: str = env_var(c.ENV_AUTH_MODE)  # one of AuthMode
    audience: str = env_var(c.ENV_AUTH_AUDIENCE)
    issuer: str = env_var(c.ENV_AUTH_ISSUER)
    role_claim: str = env_var(c.ENV_AUTH_ROLE_CLAIM)
    allowed_origins: tuple[str, ...] = env_var(c.ENV_ALLOWED_ORIGINS, JSON_LIST)
    secret_arn: str = env_var(c.ENV_AUTH_SECRET_ARN, optional=True, default="")
    jwks_url: str = env_var(c.ENV_AUTH_JWKS_URL, optional=True, default="")

    def _rules(self) -> list[str]:
        problems = []
        if self.mode not in get_args(AuthMode):
            problems.append(f"{c.ENV_AUTH_MODE} must be hs256 or oidc, not {self.mode!r}")
        if self.mode == "hs256" and not self.secret_arn:
            problems.append(f"hs256 needs {c.ENV_AUTH_SECRET_ARN}")
        if self.mode == "oidc" and not self.jwks_url.startswith("https://"):
            problems.append(f"oidc needs an https {c.ENV_AUTH_JWKS_URL}")
        return problems


@dataclass(frozen=True)
class SseSettings(EnvSettings):
    """An open SSE stream: where its live events come from, heartbeats, and when it ends itself."""

    poll_interval_ms: int = env_var(c.ENV_SSE_POLL_INTERVAL_MS, INTEGER, limits=Limits(ge=50, le=60_000))
    heartbeat_seconds: int = env_var(c.ENV_SSE_HEARTBEAT_SECONDS, INTEGER, limits=Limits(ge=1, le=300))
    # below the function's timeout (Lambda's limit is 15 minutes), so the stream ends with a retry: hint
    max_stream_seconds: int = env_var(c.ENV_SSE_MAX_STREAM_SECONDS, INTEGER, limits=Limits(ge=5, le=900))
    retry_ms: int = env_var(c.ENV_SSE_RETRY_MS, INTEGER, limits=Limits(ge=0, le=60_000))
    compress_above_bytes: int = env_var(c.ENV_COMPRESS_ABOVE_BYTES, INTEGER, limits=_COMPRESS_ABOVE_BYTES)
    # open streams one token subject may hold at once
    max_streams_per_subject: int = env_var(
        c.ENV_SSE_MAX_STREAMS_PER_SUBJECT, INTEGER, limits=Limits(ge=1, le=100)
    )
    streams_table: str = env_var(c.ENV_CONNECTIONS_TABLE)  # where the open streams are counted
    # Where streams have their events pushed from (the WebSocket API's URL); empty: they poll the store.
    push_url: str = env_var(c.ENV_SSE_PUSH_URL, optional=True, default="")

    @property
    def stall_seconds(self) -> float:
        """A stream that wrote nothing, not even a heartbeat, for two heartbeat intervals has stalled."""
        return 2.0 * self.heartbeat_seconds


@dataclass(frozen=True)
class ProbeSettings(EnvSettings):
    """Where the synthetic probe reaches the deployed stack, and the role its tokens carry."""

    websocket_url: str = env_var(c.ENV_PROBE_WEBSOCKET_URL)
    sse_url: str = env_var(c.ENV_PROBE_SSE_URL)
    publish_url: str = env_var(c.ENV_PROBE_PUBLISH_URL)
    role: str = env_var(c.ENV_PROBE_ROLE)
