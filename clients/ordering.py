"""The delivery guarantee at the application: docs/protocol.md's resume rule as a class, shared by the
subscriber over both transports (and by the tests that judge the server by it).

Per stream a position `p`, the seq of the last event handed to the application:

- `seq <= p`: a repeat (live delivery and replays overlap): dropped and counted;
- `prev <= p`: the next one owed: handed over, `p = seq`, and whatever it unblocks after it;
- `prev > p`: something between is missing: held until it comes, or until `waiting()` says it is time
  to replay from `cursor`.

An event with `coalesced` stands for that many earlier events of its type and key that the server
left out under overload; its `prev` skips them, so it is next like any other, and `coalesced` sums them.

Held events are bounded (`max_held`): past it the oldest are dropped, since a replay brings them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from clients.cursor import encode_cursor

Event = dict[str, Any]


class Ordering:
    def __init__(
        self,
        position: Mapping[str, int] | None = None,
        *,
        max_held: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.position: dict[str, int] = dict(position or {})
        self.repeats = 0  # events dropped because the application had them already
        # Events the server left out under overload, each superseded by a later one of the same type and
        # key that was handed over (its `coalesced` counts them); a replay from an earlier cursor has them.
        self.coalesced = 0
        self._held: dict[tuple[str, int], tuple[Event, float]] = {}
        self._max_held = max_held
        self._clock = clock

    @property
    def cursor(self) -> str:
        """Where to resume: exact for the types this position was built with (protocol.md)."""
        return encode_cursor(self.position)

    @property
    def held(self) -> int:
        return len(self._held)

    def offer(self, event: Event) -> list[Event]:
        """One delivered event (live or replayed); the events now owed to the application, in order."""
        stream, seq = event["stream"], event["seq"]
        if seq <= self.position.get(stream, 0) or (stream, seq) in self._held:
            self.repeats += 1
            return []
        self._held[(stream, seq)] = (event, self._clock())
        if len(self._held) > self._max_held:
            del self._held[min(self._held, key=lambda position: self._held[position][1])]
        return self._release(stream)

    def adopt(self, position: Mapping[str, int]) -> list[Event]:
        """Move to a position the server vouches for (an SSE event id, a first `subscribed.cursor`,
        the `cursor` of a `last` replay): events of this subscriber's types up to it were handed over
        or are not owed. Returns what that unblocks."""
        released: list[Event] = []
        for stream, seq in position.items():
            if seq > self.position.get(stream, 0):
                self.position[stream] = seq
                released += self._release(stream)
            else:  # an empty stream too: its first event, lost, then shows in the heads
                self.position.setdefault(stream, seq)
        return released

    def start(self, position: Mapping[str, int], history: Iterable[Event] = ()) -> list[Event]:
        """Begin at a first subscription's `position`, after a `last` replay's `history` (and whatever
        arrived with it): history is not a continuation, so the events up to `position` are handed over
        in seq order per stream without the `prev` check; the rest follow by the rule."""
        history = list(history)
        released: list[Event] = []
        for event in sorted(history, key=lambda event: (event["stream"], event["seq"])):
            stream, seq = event["stream"], event["seq"]
            if seq > position.get(stream, 0):
                continue
            if seq <= self.position.get(stream, 0):
                self.repeats += 1
                continue
            self.position[stream] = seq
            released.append(event)
        released += self.adopt(position)
        for event in history:
            if event["seq"] > position.get(event["stream"], 0):
                released += self.offer(event)
        return released

    def waiting(self) -> float:
        """How long the oldest held event has waited for its predecessor; 0 when none is held."""
        if not self._held:
            return 0.0
        return self._clock() - min(arrived for _, arrived in self._held.values())

    def behind(self, heads: Mapping[str, int], scanned: Mapping[str, int] | None = None) -> bool:
        """Whether a head (from `pong`, `welcome` or a heartbeat) is beyond what was handed over and
        what a replay has already looked at: a lost last event, or events of other types; a replay
        from `cursor` tells which."""
        scanned = scanned or {}
        return any(
            seq > max(self.position.get(stream, 0), scanned.get(stream, 0))
            for stream, seq in heads.items()
            if stream in self.position
        )

    def cut(self) -> None:
        """The connection is gone: what was held comes again after the resume."""
        self._held.clear()

    def _release(self, stream: str) -> list[Event]:
        released: list[Event] = []
        while True:
            ready = [
                (position, event)
                for position, (event, _) in self._held.items()
                if position[0] == stream and event["prev"] <= self.position.get(stream, 0)
            ]
            if not ready:
                return released
            position, event = min(ready, key=lambda item: item[0][1])
            del self._held[position]
            if event["seq"] <= self.position.get(stream, 0):  # passed by an adopted position
                self.repeats += 1
                continue
            self.position[stream] = event["seq"]
            self.coalesced += event.get("coalesced", 0)
            released.append(event)
