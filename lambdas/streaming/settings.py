"""Runtime settings, read once from the environment the stack (or the local stack) sets."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from streaming import constants as c
from streaming.events import EventCatalog
from streaming.roles import RoleMatrix


class ConfigurationError(RuntimeError):
    """The function's environment is incomplete or inconsistent; it cannot serve anything."""


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
        try:
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
        except KeyError as missing:
            raise ConfigurationError(f"environment variable {missing} is not set") from None
        except (ValueError, TypeError, AttributeError) as error:
            raise ConfigurationError(f"environment is malformed: {error}") from None

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
