"""The client side of docs/protocol.md's resume rule, as an application-facing test double: the
subscriber library (clients/) will ship the real one; tests and the chaos run judge the server by it.

Per stream: position `p` (the last seq processed); an event with `seq <= p` is a repeat; one with
`prev <= p` is next; one with `prev > p` waits for what is missing, and a replay from `p` brings that."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from streaming import cursor as cursors


class Application:
    """What a client built from docs/protocol.md hands its application: per stream a position, a
    hold for events whose predecessor has not come yet, and the events processed, in order."""

    def __init__(self) -> None:
        self.position: dict[str, int] = {}
        self.held: dict[tuple[str, int], dict[str, Any]] = {}
        self.processed: list[dict[str, Any]] = []
        self.repeats = 0  # repeats dropped: live and replayed events overlap
        self._arrived: dict[tuple[str, int], float] = {}

    def receive(self, event: dict[str, Any]) -> None:
        stream = event["stream"]
        if event["seq"] <= self.position.get(stream, 0) or (stream, event["seq"]) in self.held:
            self.repeats += 1
            return
        self.held[(stream, event["seq"])] = event
        self._arrived[(stream, event["seq"])] = time.monotonic()
        self._release(stream)

    def adopt(self, position: Mapping[str, int]) -> None:
        """Move to a position the server vouches for (an SSE id, or where a first subscription
        starts): everything of this subscriber's types up to it has been delivered or does not exist."""
        for stream, seq in position.items():
            if seq > self.position.get(stream, 0):
                self.position[stream] = seq
                self._release(stream)

    def waiting(self) -> float:
        """How long the oldest held event has waited for its predecessor (0 if none is held)."""
        return time.monotonic() - min(self._arrived.values()) if self._arrived else 0.0

    def _release(self, stream: str) -> None:
        while True:
            ready = [
                e for (s, _), e in self.held.items() if s == stream and e["prev"] <= self.position.get(s, 0)
            ]
            if not ready:
                return
            event = min(ready, key=lambda e: e["seq"])
            del self.held[(stream, event["seq"])]
            del self._arrived[(stream, event["seq"])]
            if event["seq"] <= self.position.get(stream, 0):  # passed by an adopted position
                self.repeats += 1
                continue
            self.position[stream] = event["seq"]
            self.processed.append(event)

    def cut(self) -> None:
        """The connection is gone, and with it what was held."""
        self.held.clear()
        self._arrived.clear()

    @property
    def cursor(self) -> str:
        return cursors.encode(self.position)
