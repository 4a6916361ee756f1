"""Per-connection inbound rate limit: a token bucket whose state lives with the connection, so every
Lambda invocation that handles the connection's messages sees the same bucket."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """`rate` tokens per second refill a bucket of `burst`; each message takes one."""

    rate: float
    burst: int

    def take(self, tokens: float, at: float, now: float) -> tuple[bool, float]:
        """Whether a message arriving at `now` is admitted, and the tokens left after it.
        `tokens` were left at time `at`."""
        refilled = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        if refilled >= 1.0:
            return True, refilled - 1.0
        return False, refilled


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    strikes: int  # refusals since the bucket was last full; the caller disconnects persistent abusers
    first: bool = False  # the connection's first message: the server greets it before answering
