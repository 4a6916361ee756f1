"""What the event store answers, as plain values free of DynamoDB, so the publish path, replay and
the wire format can use them without importing the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streaming.cursor import Position
from streaming.events import Envelope


@dataclass(frozen=True, slots=True)
class Appended:
    """The outcome of appending one event; `duplicate` when the id was already stored."""

    id: str
    type: str
    stream: str
    seq: int
    ts: str
    duplicate: bool
    conflicts: int = 0
    envelope: Envelope | None = field(default=None, compare=False, repr=False)  # set when stored now

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "stream": self.stream,
            "seq": self.seq,
            "ts": self.ts,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True)
class Page:
    """A replay answer. `cursor` resumes after it; `more` says another call would return more;
    `truncated` says events after the given cursor have already left the replay window."""

    events: list[Envelope]
    cursor: Position
    more: bool = False
    truncated: bool = False
