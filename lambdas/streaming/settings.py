"""Runtime settings, read once from the environment the stack (or the local stack) sets.

Each settings group is one dataclass whose fields declare their environment variable, how its text is
read and written, and the bounds it must keep; `from_env`, `to_env` and the bounds check are derived
from that declaration, and stacks/config.py takes its pydantic bounds from it too (`limits`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, NamedTuple, Self, TypedDict, cast, get_args

from streaming import constants as c
from streaming.coalesce import Coalescing
from streaming.events import EventCatalog
from streaming.roles import RoleMatrix

AuthMode = Literal["hs256", "oidc"]


class ConfigurationError(RuntimeError):
    """The function's environment is incomplete or inconsistent; it cannot serve anything."""


class Limits(TypedDict, total=False):
    """Numeric bounds, named as pydantic (annotated-types) names them, so stacks/config.py checks them too."""

    gt: int
    ge: int
    le: int


class Codec(NamedTuple):
    """How a value is read from, and written to, the text of an environment variable."""

    read: Callable[[str], Any]
    write: Callable[[Any], str]


TEXT = Codec(str, str)
INTEGER = Codec(int, str)
NUMBER = Codec(float, str)
JSON_LIST = Codec(lambda text: tuple(json.loads(text)), lambda values: json.dumps(list(values)))
STREAMS = Codec(json.loads, lambda streams: json.dumps(dict(streams), sort_keys=True))
GRANTS = Codec(
    lambda text: {role: tuple(types) for role, types in json.loads(text).items()},
    lambda grants: json.dumps({role: list(types) for role, types in grants.items()}),
)


@dataclass(frozen=True)
class EnvVar:
    """Where one settings field lives in a function's environment."""

    name: str
    codec: Codec
    optional: bool  # may be absent (read as ""), and is left out when empty; otherwise it must be set
    limits: Limits

    def read(self, env: Mapping[str, str]) -> Any:
        if self.optional and self.name not in env:
            return ""
        return self.codec.read(env[self.name])

    def problems(self, value: Any) -> list[str]:
        if value == "" and not self.optional:
            return [f"{self.name} is empty"]
        bounds, broken = self.limits, []
        if "gt" in bounds and not value > bounds["gt"]:
            broken.append(f"more than {bounds['gt']}")
        if "ge" in bounds and not value >= bounds["ge"]:
            broken.append(f"at least {bounds['ge']}")
        if "le" in bounds and not value <= bounds["le"]:
            broken.append(f"at most {bounds['le']}")
        return [f"{self.name} must be {' and '.join(broken)}, not {value}"] if broken else []


def env_var(
    name: str,
    codec: Codec = TEXT,
    *,
    optional: bool = False,
    limits: Limits | None = None,
    default: Any = dataclasses.MISSING,
) -> Any:
    """A settings field kept in the environment variable `name`."""
    declaration = EnvVar(name, codec, optional, limits or Limits())
    return dataclasses.field(default=default, metadata={EnvVar: declaration})


def _declared(group: type) -> Iterator[tuple[str, EnvVar]]:
    for field in dataclasses.fields(group):
        yield field.name, field.metadata[EnvVar]


def limits(group: type, field_name: str, *, unit: int = 1) -> Limits:
    """The bounds one settings field declares, in `unit`s of it (3600: seconds as hours)."""
    declared = cast(dict[str, int], dict(_declared(group))[field_name].limits)
    return cast(Limits, {key: bound // unit for key, bound in declared.items()})


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


class EnvSettings:
    """A settings group declared with `env_var` fields (subclasses are frozen dataclasses)."""

    def __post_init__(self) -> None:
        problems = [
            problem for name, var in _declared(type(self)) for problem in var.problems(getattr(self, name))
        ]
        problems += self._rules()
        if problems:
            raise ConfigurationError("; ".join(problems))

    def _rules(self) -> list[str]:
        """What the fields must keep together, beyond each one's own bounds."""
        return []

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Self:
        with _read_environment():
            return cls(**{name: var.read(env) for name, var in _declared(cls)})

    def to_env(self) -> dict[str, str]:
        """The inverse of from_env: what the stack and the local stack put into a function's environment."""
        values = ((var, getattr(self, name)) for name, var in _declared(type(self)))
        return {var.name: var.codec.write(value) for var, value in values if value != "" or not var.optional}


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
    """An open SSE stream: how often it polls the store, heartbeats, and when it ends itself."""

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
