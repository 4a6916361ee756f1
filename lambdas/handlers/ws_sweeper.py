"""Runs every minute: closes the WebSocket connections whose token has expired."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.composition import management, registry
from streaming.observability import logger, metrics
from streaming.session import close_expired


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    closed = close_expired(registry(), management())
    metrics.add_metric(name="ExpiredConnectionsClosed", unit=MetricUnit.Count, value=closed)
    return {"closed": closed}
