"""Each HTTP publisher's rate: a token bucket per principal, shared by every execution environment of
the publish function, kept as one item of the events table.

The bucket is stored the way the generic cell rate algorithm keeps it: one number, the theoretical
arrival time (`tat`, epoch ms) at which the bucket will be full again. Admitting n events moves it
n / rate later; a request is refused if that would put it more than burst / rate ahead of now. Each
admitted request is one conditional UpdateItem, however many events it carries; a refused one writes
nothing. docs/publishing.md ("Rate limit") weighs this against the alternatives.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from aws_lambda_powertools.metrics import MetricUnit

from streaming import constants as c
from streaming.errors import ErrorCode, RateLimited, StreamingError
from streaming.observability import metrics
from streaming.settings import PublishRateSettings
from streaming.store.table import Table

# Refused conditional writes (other environments moving the same bucket) before giving up.
MAX_ATTEMPTS = 4
_ASSUMED_ROLE = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/"
)


def principal_of(caller_arn: str) -> str:
    """Whose bucket a caller spends: an assumed role's sessions share their role's
    (arn:aws:iam::<account>:role/<name>), so a producer cannot escape its rate with new sessions."""
    match = _ASSUMED_ROLE.match(caller_arn)
    if match is None:
        return caller_arn
    return f"arn:{match['partition']}:iam::{match['account']}:role/{match['role']}"


def bucket_key(principal: str) -> str:
    """The partition of a publisher's bucket (sk 0) in the events table."""
    return f"publisher#{principal}"


@dataclass(frozen=True, slots=True)
class Bucket:
    """`rate` events per second refill up to `burst`; times in epoch milliseconds."""

    rate: float
    burst: int

    def cost(self, events: int) -> int:
        """How far admitting `events` moves the bucket's full time, in ms."""
        return math.ceil(events * 1000 / self.rate)

    def wait(self, tat: int | None, now: int, events: int) -> int:
        """Milliseconds until `events` would be admitted (0: now), given the full time `tat`."""
        return max(0, max(tat or 0, now) + self.cost(events) - now - self.cost(self.burst))


class PublishLimit:
    """Admits a publisher's request whole or refuses it whole (RateLimited, with the seconds to wait),
    before anything of it is stored."""

    def __init__(
        self,
        client: Any,
        table: str,
        settings: PublishRateSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = Table(client, table)
        self._settings = settings
        self._clock = clock
        self._known: dict[str, int | None] = {}  # principal -> its full time as last seen here

    def admit(self, caller_arn: str, events: int) -> None:
        principal = principal_of(caller_arn)
        bucket = Bucket(*self._settings.of(principal))
        if events > bucket.burst:
            raise StreamingError(
                ErrorCode.BATCH_TOO_LARGE,
                f"{events} events in one request; this publisher may send at most {bucket.burst} at once",
            )
        tat, fresh = self._known.get(principal), False
        for _ in range(MAX_ATTEMPTS):
            now = int(self._clock() * 1000)
            wait = bucket.wait(tat, now, events)
            if wait and not fresh:  # other environments may have spent more since: the wait to say
                tat, fresh = self._full_time(principal), True
                continue
            if wait:
                self._known[principal] = tat
                self._refuse(principal, bucket, events, wait)
            found = self._take(principal, bucket, tat, now, events)
            if found is None:
                self._known[principal] = max(tat or 0, now) + bucket.cost(events)
                return
            tat, fresh = _full_time_of(found), True
        self._refuse(principal, bucket, events, 1000)  # contended: as busy as a spent bucket

    def _full_time(self, principal: str) -> int | None:
        return _full_time_of(self._table.get(bucket_key(principal), 0) or {})

    def _take(self, principal: str, bucket: Bucket, tat: int | None, now: int, events: int) -> Any:
        """One conditional write; None if it took the events, else the bucket as it really is."""
        full = now + bucket.cost(bucket.burst)
        values: dict[str, Any] = {":now": now, ":cost": bucket.cost(events), ":expires": full // 1000 + 1}
        if tat is None or tat <= now:  # full: start from now
            expression, condition = "SET tat = :now + :cost", "attribute_not_exists(tat) OR tat <= :now"
        else:  # partly spent: move on from where it is, unless another writer emptied it meanwhile
            expression, condition = "SET tat = tat + :cost", "tat > :now AND tat <= :latest"
            values[":latest"] = full - bucket.cost(events)
        return self._table.update(
            bucket_key(principal),
            0,
            f"{expression}, #expires = :expires",
            values,
            ConditionExpression=condition,
            ExpressionAttributeNames={"#expires": c.TTL_ATTRIBUTE},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    @staticmethod
    def _refuse(principal: str, bucket: Bucket, events: int, wait_ms: int) -> NoReturn:
        metrics.add_metric(name="PublishesRateLimited", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="EventsRateLimited", unit=MetricUnit.Count, value=events)
        seconds = max(1, math.ceil(wait_ms / 1000))
        raise RateLimited(
            f"{principal} publishes at most {bucket.rate:g} events/s (bursts of {bucket.burst}); "
            f"nothing was stored: retry in {seconds} s",
            retry_after=seconds,
        )


def _full_time_of(item: dict[str, Any]) -> int | None:
    return int(item["tat"]) if "tat" in item else None
