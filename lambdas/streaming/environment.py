"""How a settings group reads and writes the environment: each field declares its variable, how its text
is read and written, and the bounds it must keep; `from_env`, `to_env` and the bounds check are derived
from that declaration (streaming.settings holds the groups)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, Self, TypedDict, cast


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
RATES = Codec(
    lambda text: {
        principal: (float(rate), int(burst)) for principal, (rate, burst) in json.loads(text).items()
    },
    lambda rates: json.dumps({principal: list(rate) for principal, rate in rates.items()}, sort_keys=True),
)
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
