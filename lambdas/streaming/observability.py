"""The one place that creates the Powertools logger, metrics and tracer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS

from streaming.constants import METRICS_NAMESPACE, SERVICE_NAME

logger = Logger(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
# Traced: AWS calls (botocore) and requests made with http.client (urllib too). Patching every library
# X-Ray knows would import each one installed (requests, httpx, sqlite3) at every cold start.
tracer = Tracer(service=SERVICE_NAME, patch_modules=("botocore", "httplib"))
MAX_METRIC_VALUES = 100  # values of one metric in one EMF document, CloudWatch's limit


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count, **dimensions: str) -> None:
    """One measurement written at once (EMF), with dimensions of its own besides the service: for
    code that runs outside a Lambda handler's metrics flush (the SSE app under the Lambda Web Adapter),
    and for breakdowns (by role, by transport) the handler's other metrics should not carry."""
    with single_metric(name=name, unit=unit, value=value, namespace=METRICS_NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE_NAME)
        for dimension, dimension_value in dimensions.items():
            metric.add_dimension(name=dimension, value=dimension_value)


class Sample:
    """Values of one metric measured often outside a handler's flush (the SSE app's writes), written
    as one document a minute at most: one line for up to 100 values, not one per value (Powertools
    writes a document by itself when a metric reaches 100 values, CloudWatch's limit)."""

    def __init__(
        self,
        name: str,
        unit: MetricUnit,
        *,
        seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name, self._unit, self._seconds, self._clock = name, unit, seconds, clock
        self._metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)
        self._pending = 0  # values not yet written
        self._since = clock()

    def add(self, values: Iterable[float]) -> None:
        """Add values, and write what is gathered if it is a minute old."""
        for value in values:
            self._metrics.add_metric(name=self._name, unit=self._unit, value=value)
            self._pending = (self._pending + 1) % MAX_METRICS
        if self._clock() - self._since >= self._seconds:
            self.flush()

    def flush(self) -> None:
        self._since = self._clock()
        if self._pending:
            self._metrics.flush_metrics()
            self._pending = 0


def spread(values: Sequence[float], most: int) -> list[float]:
    """At most `most` of `values`, evenly spaced in sorted order, so their percentiles stay theirs."""
    ordered = sorted(values)
    if len(ordered) <= most:
        return ordered
    return [ordered[round(i * (len(ordered) - 1) / (most - 1))] for i in range(most)]
