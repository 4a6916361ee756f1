"""Delivers one chunk of a large audience, invoked asynchronously by a publish function."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.composition import fanout, store
from streaming.fanout import recipients_from_payload
from streaming.observability import logger, metrics, tracer


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    recipients = recipients_from_payload(event, store().get)
    report = fanout().send(recipients)
    report.record()
    logger.info("chunk delivered", extra={"report": vars(report)})
    return vars(report)
