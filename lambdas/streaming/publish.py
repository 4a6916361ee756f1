"""The publish path shared by the HTTP endpoint, the EventBridge rule and in-process producers:
validate everything first, store nothing unless all of it is valid, append, then hand what was stored
to each live delivery (the WebSocket fan-out today; a new transport adds itself in the composition
root, not here)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from streaming.dynamo import unavailable
from streaming.errors import ErrorCode, StreamingError
from streaming.events import NewEvent, parse_new_event
from streaming.observability import count, metrics, tracer
from streaming.results import Appended
from streaming.settings import Settings
from streaming.store import EventStore

# Delivers stored events to live subscribers right away; must not raise (a subscriber that misses
# an event finds it by replay, so delivery never fails a publish that was stored).
LiveDelivery = Callable[[Sequence[Appended]], None]
# Admits a producer's valid events, or raises (RateLimited) to refuse the whole request.
Admit = Callable[[str, int], None]


class Publisher:
    def __init__(self, settings: Settings, store: EventStore, live: Sequence[LiveDelivery] = ()) -> None:
        self._settings = settings
        self._store = store
        self._live = tuple(live)

    @tracer.capture_method(capture_response=False)
    def publish(self, events: Any, producer: str, limit: Admit | None = None) -> list[Appended]:
        """Publish one event or a batch given as decoded JSON; raises StreamingError on bad input, and
        when `limit` refuses the producer its valid events (then too before anything is stored)."""
        # Anything but a list is one event; a non-object is then refused as an invalid envelope.
        batch = list(events) if isinstance(events, list | tuple) else [events]
        valid = self.validate(batch)
        try:
            if limit is not None:
                limit(producer, len(valid))
            stored = self._store.append(valid, producer)
        except Exception as error:
            # DynamoDB could not serve a call within botocore's retries: some streams' events may be
            # stored, and a retry with the same ids stores the rest, each once.
            if not unavailable(error):
                raise
            raise StreamingError(
                ErrorCode.STORE_UNAVAILABLE, "the event store is unavailable; retry with the same ids"
            ) from error
        for deliver in self._live:
            deliver(stored)
        return stored

    def publish_body(
        self, body: str | bytes, producer: str, limit: Admit | None = None
    ) -> tuple[list[Appended], bool]:
        """Publish a raw request body: one event object, {"events": [...]}, or a JSON array.
        Returns the results and whether the body was a batch."""
        size = len(body.encode() if isinstance(body, str) else body)
        if size > self._settings.max_body_bytes:
            raise StreamingError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"request body is {size} bytes; the limit is {self._settings.max_body_bytes}",
            )
        try:
            decoded = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise StreamingError(ErrorCode.MALFORMED_JSON, f"body is not valid JSON: {error}") from None
        except RecursionError:  # nested deeper than the parser goes
            raise StreamingError(ErrorCode.MALFORMED_JSON, "body is nested too deeply") from None
        if isinstance(decoded, dict) and "events" in decoded:
            if set(decoded) != {"events"} or not isinstance(decoded["events"], list):
                raise StreamingError(
                    ErrorCode.INVALID_ENVELOPE, 'a batch is {"events": [event, ...]} and nothing else'
                )
            decoded = decoded["events"]
        is_batch = isinstance(decoded, list)
        return self.publish(decoded, producer, limit), is_batch

    def validate(self, batch: Sequence[Any]) -> list[NewEvent]:
        """All events or none: every problem is reported, by index, before anything is stored."""
        if not batch:
            raise StreamingError(ErrorCode.EMPTY_BATCH, "a batch needs at least one event")
        if len(batch) > self._settings.max_batch_events:
            raise StreamingError(
                ErrorCode.BATCH_TOO_LARGE,
                f"batch has {len(batch)} events; the limit is {self._settings.max_batch_events}",
            )
        parsed: list[NewEvent] = []
        problems: list[tuple[int, StreamingError]] = []
        seen: set[str] = set()
        for index, raw in enumerate(batch):
            try:
                event = parse_new_event(raw, self._settings.catalog, self._settings.max_event_bytes)
            except StreamingError as error:
                problems.append((index, error))
                continue
            if event.id in seen:
                duplicate = StreamingError(ErrorCode.DUPLICATE_ID_IN_BATCH, f"id {event.id} appears twice")
                problems.append((index, duplicate))
            seen.add(event.id)
            parsed.append(event)
        if not problems:
            return parsed
        if len(batch) == 1:
            raise problems[0][1]
        raise StreamingError(
            problems[0][1].error,
            f"{len(problems)} of {len(batch)} events are invalid; nothing was stored",
            [
                {"index": index, "code": error.error.code, "message": error.message, **_first(error.details)}
                for index, error in problems
            ],
        )


def record(results: Sequence[Appended]) -> None:
    """As metrics, the same from every publish path: events stored (in total, and by type), repeated
    ids, lost head races and the size of the request's batch."""
    stored = Counter(result.type for result in results if not result.duplicate)
    for name, value in (
        ("EventsPublished", stored.total()),
        ("DuplicatePublishes", len(results) - stored.total()),
        ("SequenceConflicts", sum(result.conflicts for result in results)),
        ("PublishBatchSize", len(results)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for event_type, events in sorted(stored.items()):
        count("EventsPublished", events, type=event_type)


def _first(details: list[dict[str, Any]]) -> dict[str, Any]:
    return details[0] if details else {}
