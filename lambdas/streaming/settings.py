"""Runtime settings, read once from the environment the stack (or the local stack) sets."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

from streaming import constants as c
from streaming.events import EventCatalog
from streaming.roles import RoleMatrix


class ConfigurationError(RuntimeError):
    """The function's environment is incomplete or inconsistent; it cannot serve anything."""


@contextmanager
def _read_environment() -> Iterator[None]:
    """A variable missing or malformed while settings are read from the environment: a
    ConfigurationError that says which."""
    try:
        yield
    except KeyError as missing:
        raise ConfigurationError(f"environment variable {missing} is not set") from None
    except (ValueError, TypeError, AttributeError) as error:
        raise ConfigurationError(f"environment is malformed: {error}") from None


@dataclass(frozen=True)
class Settings:
    events_table: str
    streams_by_type: Mapping[str, str]
    role_grants: Mapping[str, tuple[str, ...]]
    replay_window_seconds: int
    max_event_bytes: int
    max_batch_events: int

    def __post_init__(self) -> None:
        problems = []
        if not self.events_table:
            problems.append(f"{c.ENV_EVENTS_TABLE} is empty")
        for event_type, stream in self.streams_by_type.items():
            if not re.match(c.STREAM_NAME_PATTERN, stream):
                problems.append(f"stream {stream!r} of {event_type} does not match {c.STREAM_NAME_PATTERN}")
        for role, types in self.role_grants.items():
            unknown = set(types) - set(self.streams_by_type)
            if unknown:
                problems.append(f"role {role} grants unknown types {sorted(unknown)}")
        if self.replay_window_seconds < 3600:
            problems.append("the replay window must be at least 3600 seconds")
        if not 1 <= self.max_batch_events <= 1000 or not 256 <= self.max_event_bytes <= 120_000:
            problems.append("max batch must be 1..1000 events and max event size 256..120000 bytes")
        if problems:
            raise ConfigurationError("; ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        with _read_environment():
            return cls(
                events_table=env[c.ENV_EVENTS_TABLE],
                streams_by_type=json.loads(env[c.ENV_EVENT_STREAMS]),
                role_grants={
                    role: tuple(types) for role, types in json.loads(env[c.ENV_ROLE_MATRIX]).items()
                },
                replay_window_seconds=int(env[c.ENV_REPLAY_WINDOW_SECONDS]),
                max_event_bytes=int(env[c.ENV_MAX_EVENT_BYTES]),
                max_batch_events=int(env[c.ENV_MAX_BATCH_EVENTS]),
            )

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env: what the stack and the local stack put into a function's environment."""
        return {
            c.ENV_EVENTS_TABLE: self.events_table,
            c.ENV_EVENT_STREAMS: json.dumps(dict(self.streams_by_type), sort_keys=True),
            c.ENV_ROLE_MATRIX: json.dumps({role: list(types) for role, types in self.role_grants.items()}),
            c.ENV_REPLAY_WINDOW_SECONDS: str(self.replay_window_seconds),
            c.ENV_MAX_EVENT_BYTES: str(self.max_event_bytes),
            c.ENV_MAX_BATCH_EVENTS: str(self.max_batch_events),
        }

    @cached_property
    def catalog(self) -> EventCatalog:
        return EventCatalog.load(frozenset(self.streams_by_type))

    @cached_property
    def roles(self) -> RoleMatrix:
        return RoleMatrix(self.role_grants)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body worth parsing: a full batch of full events plus envelope overhead."""
        return self.max_batch_events * (self.max_event_bytes + 1024)


@dataclass(frozen=True)
class DeliverySettings:
    """Live delivery over the WebSocket API: where connections are kept and how to reach them."""

    connections_table: str
    management_url: str  # the stage's @connections endpoint, https://{api}.execute-api.../{stage}
    fanout_function: str  # worker invoked asynchronously per chunk of a large audience
    fanout_chunk_connections: int  # audiences up to this size are delivered inline
    compress_above_bytes: int  # event data larger than this (as JSON) is sent gzip-compressed
    messages_per_second: float  # inbound token bucket per connection
    burst: int

    def __post_init__(self) -> None:
        problems = []
        if not self.connections_table or not self.management_url:
            problems.append(f"{c.ENV_CONNECTIONS_TABLE} and {c.ENV_MANAGEMENT_URL} must be set")
        if not 10 <= self.fanout_chunk_connections <= c.MAX_FANOUT_CHUNK_CONNECTIONS:
            problems.append(f"the fan-out chunk must be 10..{c.MAX_FANOUT_CHUNK_CONNECTIONS} connections")
        if self.compress_above_bytes < 256:
            problems.append("compression must start at 256 bytes or more")
        if self.messages_per_second <= 0 or self.burst < 1:
            problems.append("the inbound rate limit needs a positive rate and a burst of at least 1")
        if problems:
            raise ConfigurationError("; ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DeliverySettings:
        with _read_environment():
            return cls(
                connections_table=env[c.ENV_CONNECTIONS_TABLE],
                management_url=env[c.ENV_MANAGEMENT_URL],
                fanout_function=env.get(c.ENV_FANOUT_FUNCTION, ""),
                fanout_chunk_connections=int(env[c.ENV_FANOUT_CHUNK_CONNECTIONS]),
                compress_above_bytes=int(env[c.ENV_COMPRESS_ABOVE_BYTES]),
                messages_per_second=float(env[c.ENV_WS_MESSAGES_PER_SECOND]),
                burst=int(env[c.ENV_WS_BURST]),
            )

    def to_env(self) -> dict[str, str]:
        env = {
            c.ENV_CONNECTIONS_TABLE: self.connections_table,
            c.ENV_MANAGEMENT_URL: self.management_url,
            c.ENV_FANOUT_CHUNK_CONNECTIONS: str(self.fanout_chunk_connections),
            c.ENV_COMPRESS_ABOVE_BYTES: str(self.compress_above_bytes),
            c.ENV_WS_MESSAGES_PER_SECOND: str(self.messages_per_second),
            c.ENV_WS_BURST: str(self.burst),
        }
        if self.fanout_function:  # only functions that hand chunks on name the worker
            env[c.ENV_FANOUT_FUNCTION] = self.fanout_function
        return env


@dataclass(frozen=True)
class AuthSettings:
    """How tokens are verified: "hs256" with the secret at `secret_arn`, or "oidc" with `jwks_url`."""

    mode: str
    audience: str
    issuer: str
    role_claim: str
    allowed_origins: tuple[str, ...]
    secret_arn: str = ""
    jwks_url: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in ("hs256", "oidc"):
            problems.append(f"{c.ENV_AUTH_MODE} must be hs256 or oidc, not {self.mode!r}")
        if self.mode == "hs256" and not self.secret_arn:
            problems.append(f"hs256 needs {c.ENV_AUTH_SECRET_ARN}")
        if self.mode == "oidc" and not self.jwks_url.startswith("https://"):
            problems.append(f"oidc needs an https {c.ENV_AUTH_JWKS_URL}")
        if not self.audience or not self.issuer or not self.role_claim:
            problems.append("audience, issuer and role claim must be set")
        if problems:
            raise ConfigurationError("; ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AuthSettings:
        with _read_environment():
            return cls(
                mode=env[c.ENV_AUTH_MODE],
                audience=env[c.ENV_AUTH_AUDIENCE],
                issuer=env[c.ENV_AUTH_ISSUER],
                role_claim=env[c.ENV_AUTH_ROLE_CLAIM],
                allowed_origins=tuple(json.loads(env[c.ENV_ALLOWED_ORIGINS])),
                secret_arn=env.get(c.ENV_AUTH_SECRET_ARN, ""),
                jwks_url=env.get(c.ENV_AUTH_JWKS_URL, ""),
            )

    def to_env(self) -> dict[str, str]:
        env = {
            c.ENV_AUTH_MODE: self.mode,
            c.ENV_AUTH_AUDIENCE: self.audience,
            c.ENV_AUTH_ISSUER: self.issuer,
            c.ENV_AUTH_ROLE_CLAIM: self.role_claim,
            c.ENV_ALLOWED_ORIGINS: json.dumps(list(self.allowed_origins)),
        }
        if self.secret_arn:
            env[c.ENV_AUTH_SECRET_ARN] = self.secret_arn
        if self.jwks_url:
            env[c.ENV_AUTH_JWKS_URL] = self.jwks_url
        return env


@dataclass(frozen=True)
class SseSettings:
    """An open SSE stream: how often it polls the store, heartbeats, and when it ends itself."""

    poll_interval_ms: int
    heartbeat_seconds: int
    max_stream_seconds: int  # below the function's timeout, so the stream ends with a retry: hint
    retry_ms: int
    compress_above_bytes: int
    max_streams_per_subject: int  # open streams one token subject may hold at once
    streams_table: str  # where the open streams are counted: the connections table

    @property
    def stall_seconds(self) -> float:
        """A stream that wrote nothing, not even a heartbeat, for two heartbeat intervals has stalled."""
        return 2.0 * self.heartbeat_seconds

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.max_streams_per_subject <= 100 or not self.streams_table:
            problems.append("SSE needs 1..100 streams per subject and the connections table to count them in")
        if not 50 <= self.poll_interval_ms <= 60_000:
            problems.append("the SSE poll interval must be 50..60000 ms")
        if not 1 <= self.heartbeat_seconds <= 300:
            problems.append("the SSE heartbeat must be 1..300 seconds")
        if not 5 <= self.max_stream_seconds <= 900:
            problems.append("an SSE stream lasts 5..900 seconds (Lambda's 15-minute limit)")
        if not 0 <= self.retry_ms <= 60_000:
            problems.append("the SSE retry hint must be 0..60000 ms")
        if self.compress_above_bytes < 256:
            problems.append("compression must start at 256 bytes or more")
        if problems:
            raise ConfigurationError("; ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SseSettings:
        with _read_environment():
            return cls(
                poll_interval_ms=int(env[c.ENV_SSE_POLL_INTERVAL_MS]),
                heartbeat_seconds=int(env[c.ENV_SSE_HEARTBEAT_SECONDS]),
                max_stream_seconds=int(env[c.ENV_SSE_MAX_STREAM_SECONDS]),
                retry_ms=int(env[c.ENV_SSE_RETRY_MS]),
                compress_above_bytes=int(env[c.ENV_COMPRESS_ABOVE_BYTES]),
                max_streams_per_subject=int(env[c.ENV_SSE_MAX_STREAMS_PER_SUBJECT]),
                streams_table=env[c.ENV_CONNECTIONS_TABLE],
            )

    def to_env(self) -> dict[str, str]:
        return {
            c.ENV_SSE_POLL_INTERVAL_MS: str(self.poll_interval_ms),
            c.ENV_SSE_HEARTBEAT_SECONDS: str(self.heartbeat_seconds),
            c.ENV_SSE_MAX_STREAM_SECONDS: str(self.max_stream_seconds),
            c.ENV_SSE_RETRY_MS: str(self.retry_ms),
            c.ENV_COMPRESS_ABOVE_BYTES: str(self.compress_above_bytes),
            c.ENV_SSE_MAX_STREAMS_PER_SUBJECT: str(self.max_streams_per_subject),
            c.ENV_CONNECTIONS_TABLE: self.streams_table,
        }
