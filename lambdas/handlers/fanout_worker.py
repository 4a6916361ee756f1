"""Delivers one chunk of a large audience, invoked asynchronously by a publish function."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from streaming.fanout import recipients_from_payload
from streaming.observability import logger, metrics, record_delivery, tracer
from streaming.runtime import delivery, services


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    recipients = recipients_from_payload(event, services().store.get)
    report = delivery().fanout.send(recipients)
    record_delivery(report)
    logger.info("chunk delivered", extra={"report": vars(report)})
    return vars(report)
