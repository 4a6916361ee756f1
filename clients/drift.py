"""Clock drift from the server's time in `pong` (and SSE heartbeats): the server's clock minus this
one, estimated from the exchange with the shortest round trip seen lately, whose error is at most
half of that round trip (Cristian's algorithm)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class DriftEstimate:
    samples: int = 8  # the last this many exchanges are kept
    _seen: deque[tuple[float, float]] = field(
        default_factory=deque, init=False, repr=False
    )  # (round trip, offset)

    def add(self, sent_at: float, server_time: str, received_at: float) -> None:
        """One exchange: when the ping went out and its answer came back (epoch seconds, this clock),
        and the server's time in the answer (RFC 3339, as the server writes it)."""
        server = epoch_seconds(server_time)
        round_trip = max(0.0, received_at - sent_at)
        self._seen.append((round_trip, server - (sent_at + round_trip / 2)))
        while len(self._seen) > self.samples:
            self._seen.popleft()

    @property
    def offset_seconds(self) -> float | None:
        """Server clock minus this clock; None before any exchange."""
        return min(self._seen)[1] if self._seen else None

    @property
    def uncertainty_seconds(self) -> float | None:
        return min(self._seen)[0] / 2 if self._seen else None


def epoch_seconds(rfc3339: str) -> float:
    """The server's time stamps (RFC 3339, `Z` for UTC) as epoch seconds."""
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
