"""The one place that creates the Powertools logger, metrics and tracer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from streaming.constants import METRICS_NAMESPACE, SERVICE_NAME

if TYPE_CHECKING:
    from streaming.fanout import Report

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)


def record_delivery(report: Report) -> None:
    """Live delivery metrics, the same from a publish function and a fan-out worker."""
    for name, value in (
        ("FramesDelivered", report.delivered),
        ("FramesFailed", report.failed),
        ("ConnectionsGone", report.gone),
        ("FanOutChunksDispatched", report.chunks_dispatched),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    if report.connections:
        metrics.add_metric(name="FanOutLookupTime", unit=MetricUnit.Milliseconds, value=report.lookup_ms)
        metrics.add_metric(name="FanOutPostTime", unit=MetricUnit.Milliseconds, value=report.post_ms)


def count(name: str) -> None:
    """One occurrence of something rare, written at once (EMF): for code that runs outside a Lambda
    handler's metrics flush, such as the SSE app under the Lambda Web Adapter."""
    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=METRICS_NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE_NAME)
