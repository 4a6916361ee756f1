"""The event model: what producers send (NewEvent), what is stored and delivered (Envelope),
and the catalog of JSON Schemas (one file per type and version under schemas/, the single source)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastjsonschema

from streaming.errors import ErrorCode, StreamingError

SCHEMAS_DIR = Path(__file__).parent / "schemas"
_SCHEMA_FILE = re.compile(r"^(?P<type>[a-z]+(?:\.[a-z_]+)+)\.v(?P<version>[1-9][0-9]*)\.json$")
NEW_EVENT_FIELDS = frozenset({"id", "type", "data", "schema_version", "key"})
_TEXT_FIELD = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,127}$")  # printable ASCII, 1..128 chars


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as a producer submits it; the store assigns stream, seq, prev and ts."""

    id: str
    type: str
    data: Mapping[str, Any]
    schema_version: int = 1
    key: str | None = None

    def digest(self) -> str:
        """Fingerprint of the content, so a reused id with different content is detected."""
        canonical = json.dumps(
            [self.type, self.schema_version, self.data, self.key], sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Envelope:
    """The one shape every stored and delivered event has (docs/events.md). `prev` is the seq of the
    previous event of its type in its stream; `type_heads` the last seq of every type of its stream
    when it was committed (its own included), from which delivery derives each subscriber's `prev`."""

    id: str
    type: str
    stream: str
    seq: int
    prev: int
    ts: str
    schema_version: int
    data: Mapping[str, Any]
    producer: str
    key: str | None = None
    # Required: without it `prev_among` would fall back to the per-type prev, too low for a subscriber.
    type_heads: Mapping[str, int] = field(kw_only=True, compare=False, repr=False)
    # Live delivery under overload only (streaming.coalesce): earlier events of the same type and key
    # this one stands for, which were not sent. Never stored.
    coalesced: int = field(default=0, kw_only=True)

    def prev_among(self, types: Iterable[str]) -> int:
        """The seq of the previous event of this stream among `types` (0 if none): what a subscriber
        to `types` must have before this one. Types outside `types` are not looked at, so it tells
        nothing about events the subscriber does not get."""
        return max([self.prev, *(self.type_heads.get(t, 0) for t in types if t != self.type)])

    def to_dict(self, types: Iterable[str] | None = None) -> dict[str, Any]:
        """As delivered to a subscriber to `types` (their `prev_among`), or with the stored `prev`."""
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "stream": self.stream,
            "seq": self.seq,
            "prev": self.prev if types is None else self.prev_among(types),
            "ts": self.ts,
            "schema_version": self.schema_version,
            "producer": self.producer,
            "data": self.data,
        }
        if self.key is not None:
            body["key"] = self.key
        if self.coalesced:
            body["coalesced"] = self.coalesced
        return body


def format_ts(epoch_ms: int) -> str:
    """RFC 3339 UTC with millisecond precision, e.g. 2026-11-27T08:14:03.512Z."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_ts(ts: str) -> int:
    """The inverse of format_ts: epoch milliseconds."""
    parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


class EventCatalog:
    """The known event types, their schema versions and validators."""

    def __init__(self, schemas: Mapping[tuple[str, int], Mapping[str, Any]]) -> None:
        self._schemas: dict[tuple[str, int], Mapping[str, Any]] = dict(schemas)
        self._validators: dict[tuple[str, int], Callable[[Any], Any]] = {
            key: fastjsonschema.compile(dict(schema)) for key, schema in self._schemas.items()
        }
        self.types = frozenset(event_type for event_type, _ in self._schemas)

    @classmethod
    def load(cls, types: frozenset[str] | None = None, directory: Path = SCHEMAS_DIR) -> EventCatalog:
        """Load every schema file; with `types`, only those types (each must have a schema)."""
        schemas: dict[tuple[str, int], Mapping[str, Any]] = {}
        for path in sorted(directory.glob("*.json")):
            match = _SCHEMA_FILE.match(path.name)
            if not match:
                raise ValueError(f"schema file name must be <type>.v<N>.json: {path.name}")
            if types is None or match["type"] in types:
                schemas[(match["type"], int(match["version"]))] = json.loads(path.read_text())
        missing = (types or frozenset()) - {event_type for event_type, _ in schemas}
        if missing:
            raise ValueError(f"no schema for event types: {sorted(missing)}")
        return cls(schemas)

    def schema(self, event_type: str, version: int) -> Mapping[str, Any]:
        return self._schemas[(event_type, version)]

    def versions(self, event_type: str) -> list[int]:
        return sorted(version for known, version in self._schemas if known == event_type)

    def validate_data(self, event_type: str, version: int, data: Any) -> None:
        if event_type not in self.types:
            raise StreamingError(ErrorCode.UNKNOWN_TYPE, f"unknown event type {event_type!r}")
        validator = self._validators.get((event_type, version))
        if validator is None:
            raise StreamingError(
                ErrorCode.UNSUPPORTED_SCHEMA_VERSION,
                f"{event_type} has schema versions {self.versions(event_type)}, not {version}",
            )
        try:
            validator(data)
        except fastjsonschema.JsonSchemaValueException as error:
            raise StreamingError(
                ErrorCode.SCHEMA_VIOLATION,
                f"data does not match {event_type} v{version}: {error.message}",
                [{"path": error.path if isinstance(error.path, str) else ".".join(map(str, error.path))}],
            ) from error


def data_bytes(data: Mapping[str, Any]) -> int:
    """The size of an event's `data` as it is stored: compact JSON in UTF-8."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def parse_new_event(raw: Any, catalog: EventCatalog, max_data_bytes: int) -> NewEvent:
    """Validate one submitted event; raise StreamingError with the most specific code."""
    if not isinstance(raw, dict):
        raise StreamingError(ErrorCode.INVALID_ENVELOPE, "an event must be a JSON object")
    unknown = sorted(set(raw) - NEW_EVENT_FIELDS)
    if unknown:
        raise StreamingError(
            ErrorCode.INVALID_ENVELOPE,
            f"unknown fields {unknown}; allowed: {sorted(NEW_EVENT_FIELDS)} "
            "(stream, seq, prev and ts are assigned by the store, producer from the caller's identity)",
        )
    event_id = raw.get("id")
    if event_id is None or event_id == "":
        raise StreamingError(ErrorCode.MISSING_ID, "every event needs an id (a UUID chosen by the producer)")
    if not _is_uuid(event_id):
        raise StreamingError(ErrorCode.INVALID_ID, "id must be a UUID in canonical form, e.g. 0192f1c4-...")
    event_type = raw.get("type")
    if not isinstance(event_type, str) or event_type not in catalog.types:
        raise StreamingError(
            ErrorCode.UNKNOWN_TYPE, f"unknown event type {event_type!r}; known: {sorted(catalog.types)}"
        )
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise StreamingError(ErrorCode.INVALID_ENVELOPE, "schema_version must be an integer")
    key = raw.get("key")
    if key is not None and not (isinstance(key, str) and _TEXT_FIELD.match(key)):
        raise StreamingError(ErrorCode.INVALID_ENVELOPE, "key must be 1 to 128 printable ASCII characters")
    data = raw.get("data")
    if not isinstance(data, dict):
        raise StreamingError(ErrorCode.INVALID_ENVELOPE, "data must be a JSON object")
    size = data_bytes(data)
    if size > max_data_bytes:
        raise StreamingError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"data is {size} bytes; the limit is {max_data_bytes}"
        )
    catalog.validate_data(event_type, version, data)
    return NewEvent(
        id=str(uuid.UUID(event_id)),
        type=event_type,
        data=data,
        schema_version=version,
        key=key,
    )


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False
