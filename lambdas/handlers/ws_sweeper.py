"""Runs every minute: closes the WebSocket connections whose token has expired."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from streaming.observability import logger, metrics
from streaming.runtime import delivery


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    closed = delivery().session.close_expired()
    metrics.add_metric(name="ExpiredConnectionsClosed", unit=MetricUnit.Count, value=closed)
    return {"closed": closed}
