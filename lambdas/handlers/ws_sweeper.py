"""Runs every minute: closes the WebSocket connections that have expired (their token, or the time
before API Gateway's 2-hour cut), tells those about to expire to reconnect, then counts the open
connections of both transports (streaming.stats): saved for `GET /stats`, written as gauges."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.composition import delivery_settings, dynamodb, management, registry, settings, stream_leases
from streaming import stats
from streaming.observability import logger, metrics
from streaming.session import close_expired, send_reconnect_notices


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    closed = close_expired(registry(), management())
    metrics.add_metric(name="ExpiredConnectionsClosed", unit=MetricUnit.Count, value=closed)
    noticed = send_reconnect_notices(registry(), management())
    metrics.add_metric(name="ReconnectNotices", unit=MetricUnit.Count, value=noticed)
    counted = stats.take(registry(), stream_leases(), settings().streams_by_type)
    stats.save(dynamodb(), delivery_settings().connections_table, counted)
    stats.record(counted, settings().roles.names)
    return {"closed": closed, "noticed": noticed, "open": counted.total}
