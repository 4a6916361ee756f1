"""When to reconnect: exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS
Architecture Blog), capped, with a maximum of attempts after which the subscriber gives up and says so,
and a reset once a connection has stayed up long enough to count as stable."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    max_attempts: int = 10  # the specification's default; then the subscriber's state is terminal
    stable_seconds: float = 30.0  # a connection up this long resets the schedule
    jitter: Callable[[], float] = field(default=random.random, repr=False)  # uniform in [0, 1)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    attempts: int = field(default=0, init=False)
    _connected_at: float | None = field(default=None, init=False, repr=False)

    def next_delay(self) -> float | None:
        """The wait before the next attempt (uniform in [0, min(cap, base * 2**attempt)]), or None
        when the attempts are used up."""
        if self._connected_at is not None and self.clock() - self._connected_at >= self.stable_seconds:
            self.attempts = 0
        self._connected_at = None
        if self.attempts >= self.max_attempts:
            return None
        ceiling = min(self.cap_seconds, self.base_seconds * 2**self.attempts)
        self.attempts += 1
        return float(ceiling * self.jitter())

    def connected(self) -> None:
        """A connection opened; if it stays up for `stable_seconds`, the next failure starts afresh."""
        self._connected_at = self.clock()
