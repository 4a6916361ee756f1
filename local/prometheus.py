"""The handlers' metrics in Prometheus text format: what `/metrics` of the local stack serves.

Nothing here counts anything by itself: every sample comes from an EMF document the handlers printed
(Powertools Metrics, `streaming.observability`), so the local numbers are the numbers CloudWatch would
get. The rules (docs/operations.md, "Locally: /metrics"):

- a metric of the `RealtimeStreaming` namespace is `streaming_<snake_case name>`;
- its labels are the dimensions of one dimension set of its document, `service` left out (every metric
  has it, always `streaming`); a document with several dimension sets feeds one series per set, as
  CloudWatch stores one metric per set;
- unit `Count`: a counter, `..._total`, the sum of every value;
- units `Seconds`, `Milliseconds`, `Microseconds`: a histogram in seconds, `..._seconds`;
- a name in `GAUGES`, or any other unit: a gauge holding the last value.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from streaming.constants import METRICS_NAMESPACE

PREFIX = "streaming_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EMF_START = '{"_aws":'
# Levels rather than events: the last value written is the current one.
GAUGES = frozenset({"ConnectionsOpen", "ConnectionsActive"})
SECONDS_PER_UNIT = {"Seconds": 1.0, "Milliseconds": 1e-3, "Microseconds": 1e-6}
# Seconds, from a fast loopback delivery to an SSE stream's 15 minutes; 0.1 is the latency objective.
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
)
DROPPED_DIMENSIONS = frozenset({"service"})

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One EMF metric of one document, under one of its dimension sets."""

    name: str
    unit: str
    labels: Labels
    values: tuple[float, ...]


def samples(line: str) -> list[Sample]:
    """The samples of one output line; none for a line that is not a valid EMF document of ours."""
    if not line.startswith(EMF_START):
        return []
    try:
        document = json.loads(line)
        directives = document["_aws"]["CloudWatchMetrics"]
        found = []
        for directive in directives:
            if directive.get("Namespace") != METRICS_NAMESPACE:
                continue
            label_sets = [_labels(document, names) for names in directive.get("Dimensions") or [[]]]
            for metric in directive["Metrics"]:
                values = _values(document.get(metric["Name"]))
                if values:
                    found += [
                        Sample(metric["Name"], metric.get("Unit", "None"), labels, values)
                        for labels in label_sets
                        if labels is not None
                    ]
        return found
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def _labels(document: dict[str, Any], names: Sequence[str]) -> Labels | None:
    """A dimension set's labels; None when the document lacks one of its values."""
    if not all(isinstance(document.get(name), str) for name in names):
        return None
    kept = [name for name in names if name not in DROPPED_DIMENSIONS]
    return tuple(sorted((_label_name(name), document[name]) for name in kept))


def _values(raw: Any) -> tuple[float, ...]:
    """EMF gives a number or a list of up to 100 numbers."""
    listed = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in listed):
        return ()
    return tuple(float(v) for v in listed)


def metric_name(name: str) -> str:
    """`FanOutLookupTime` -> `streaming_fan_out_lookup_time`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()
    return PREFIX + re.sub(r"[^a-z0-9_]", "_", snake)


def family_of(name: str, unit: str) -> tuple[str, str]:
    """The Prometheus name and type of an EMF metric."""
    base = metric_name(name)
    if name in GAUGES or (unit not in SECONDS_PER_UNIT and unit != "Count"):
        return base, "gauge"
    if unit == "Count":
        return f"{base}_total", "counter"
    return (base if base.endswith("_seconds") else f"{base}_seconds"), "histogram"


def _label_name(name: str) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return cleaned if re.match(r"[a-zA-Z_]", cleaned) else f"_{cleaned}"


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * len(bounds)  # cumulative, as exposed
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        for index, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.buckets[index] += 1
        self.total += seconds
        self.count += 1


@dataclass
class _Family:
    kind: str  # counter, gauge or histogram
    help: str
    series: dict[Labels, Any] = field(default_factory=dict)


class Registry:
    """Every metric seen so far, from any thread: `observe` each output line, `exposition` on a scrape."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self._buckets = buckets
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def observe(self, line: str) -> None:
        """Never raises: it runs inside the console's writes."""
        for sample in samples(line):
            with self._lock:
                self._add(sample)

    def _add(self, sample: Sample) -> None:
        name, kind = family_of(sample.name, sample.unit)
        family = self._families.setdefault(name, _Family(kind, f"{sample.name} ({sample.unit}) from EMF"))
        if family.kind != kind:  # two EMF metrics named alike: the first one seen keeps the name
            return
        if kind == "gauge":
            family.series[sample.labels] = sample.values[-1]
        elif kind == "counter":
            if all(value >= 0 for value in sample.values):  # a counter never goes down
                family.series[sample.labels] = family.series.get(sample.labels, 0.0) + sum(sample.values)
        else:
            histogram = family.series.setdefault(sample.labels, _Histogram(self._buckets))
            for value in sample.values:
                histogram.observe(value * SECONDS_PER_UNIT[sample.unit])

    def exposition(self) -> str:
        with self._lock:
            return "".join(
                line
                for name, family in sorted(self._families.items())
                for line in _family_lines(name, family)
            )


def _family_lines(name: str, family: _Family) -> Iterator[str]:
    yield f"# HELP {name} {_escaped(family.help, quote=False)}\n"
    yield f"# TYPE {name} {family.kind}\n"
    for labels, value in sorted(family.series.items()):
        if family.kind != "histogram":
            yield f"{name}{_label_text(labels)} {_number(value)}\n"
            continue
        for bound, count in zip((*value.bounds, math.inf), (*value.buckets, value.count), strict=True):
            yield f"{name}_bucket{_label_text((*labels, ('le', _number(bound))))} {count}\n"
        yield f"{name}_sum{_label_text(labels)} {_number(value.total)}\n"
        yield f"{name}_count{_label_text(labels)} {value.count}\n"


def _label_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escaped(value)}"' for name, value in labels) + "}"


def _escaped(value: str, *, quote: bool = True) -> str:
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if quote else escaped


def _number(value: float) -> str:
    return "+Inf" if value == math.inf else repr(float(value))
