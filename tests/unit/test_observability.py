"""Metrics written at once (EMF), with dimensions of their own."""

from __future__ import annotations

import json

from aws_lambda_powertools.metrics import MetricUnit

from streaming.observability import Sample, count
from tests.conftest import Clock


def test_a_counted_measurement_carries_its_own_dimensions_besides_the_service(capsys):
    count("ConnectionsOpened", role="analyst", transport="sse")
    [document] = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "ConnectionsOpened" in line
    ]
    assert document["ConnectionsOpened"] == [1.0]
    assert (document["service"], document["role"], document["transport"]) == ("streaming", "analyst", "sse")
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert set(directive["Dimensions"][0]) == {"service", "role", "transport"}


def documents(capsys, name):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if name in line]


def test_a_sample_is_written_once_a_minute_or_at_100_values_not_once_per_value(capsys):
    clock = Clock()
    sample = Sample("SseDeliveryLatency", MetricUnit.Milliseconds, clock=clock)
    sample.add([12.0, 30.5])
    assert documents(capsys, "SseDeliveryLatency") == []  # gathered, not yet written
    clock.advance(60)
    sample.add([7.0])
    [document] = documents(capsys, "SseDeliveryLatency")
    assert document["SseDeliveryLatency"] == [12.0, 30.5, 7.0]
    assert document["service"] == "streaming"
    [metric] = document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    assert metric == {"Name": "SseDeliveryLatency", "Unit": "Milliseconds"}

    sample.add(float(value) for value in range(250))
    written = documents(capsys, "SseDeliveryLatency")
    assert [len(d["SseDeliveryLatency"]) for d in written] == [100, 100]  # CloudWatch's limit per document
    sample.flush()
    assert [len(d["SseDeliveryLatency"]) for d in documents(capsys, "SseDeliveryLatency")] == [50]
    sample.flush()
    assert documents(capsys, "SseDeliveryLatency") == []  # nothing gathered, nothing written
