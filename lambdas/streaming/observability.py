"""The one place that creates the Powertools logger, metrics and tracer."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from streaming.constants import METRICS_NAMESPACE, SERVICE_NAME

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)


def count(name: str) -> None:
    """One occurrence of something rare, written at once (EMF): for code that runs outside a Lambda
    handler's metrics flush, such as the SSE app under the Lambda Web Adapter."""
    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace=METRICS_NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE_NAME)
