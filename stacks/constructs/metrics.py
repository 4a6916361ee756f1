"""The metrics the functions emit through Powertools (EMF), as the alarms and the dashboard read them:
the service's namespace and dimension, and the few dimensions a metric has of its own."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from streaming import constants as c

PERIOD = Duration.minutes(5)


def service_metric(
    name: str, statistic: str, *, label: str | None = None, **dimensions: str
) -> cloudwatch.Metric:
    """`dimensions` are the metric's own besides `service` (e.g. transport="sse")."""
    return cloudwatch.Metric(
        namespace=c.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": c.SERVICE_NAME, **dimensions},
        statistic=statistic,
        period=PERIOD,
        label=label,
    )


def delivery_success_percent() -> cloudwatch.MathExpression:
    """The delivery service level: the share of WebSocket frames posted that were accepted."""
    return cloudwatch.MathExpression(
        expression="100 * delivered / (delivered + failed)",
        using_metrics={
            "delivered": service_metric("FramesDelivered", "Sum"),
            "failed": service_metric("FramesFailed", "Sum"),
        },
        label="Frames delivered (%)",
        period=PERIOD,
    )
