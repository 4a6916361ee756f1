"""EventBridge target: events put on the stream's custom bus enter the same publish code.

detail-type is the event type, source the producer; detail carries data and optionally id,
schema_version and key. Without an id the EventBridge event id is used, which is stable across
EventBridge's own retries, so redelivery stores the event once. Invalid events raise, so they end in
the function's dead-letter queue after the asynchronous retries instead of being lost.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.composition import publisher
from streaming.errors import StreamingError
from streaming.observability import logger, metrics, tracer
from streaming.publish import record


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_source(data_class=EventBridgeEvent)  # not the pydantic parser: it took 200 ms of every cold start
def handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    raw = {"id": event.get_id, **event.detail, "type": event.detail_type}
    try:
        results = publisher().publish(raw, producer=event.source)
    except StreamingError as error:
        metrics.add_metric(name="EventsRejected", unit=MetricUnit.Count, value=1)
        logger.error(
            "rejected", extra={"code": error.error.code, "reason": error.message, "source": event.source}
        )
        raise
    record(results)
    [result] = results
    return result.to_dict()
