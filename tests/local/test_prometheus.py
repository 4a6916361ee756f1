"""The handlers' EMF lines as Prometheus text (local.prometheus, `/metrics` of the local stack)."""

from __future__ import annotations

import io
import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from local.console import Console
from local.prometheus import Registry, family_of, metric_name
from streaming.observability import count, metrics


def emf(values: dict[str, Any], units: dict[str, str], *dimension_sets: list[str]) -> str:
    """An EMF document as Powertools prints it."""
    directive = {
        "Namespace": "RealtimeStreaming",
        "Dimensions": [list(names) for names in dimension_sets],
        "Metrics": [{"Name": name, "Unit": unit} for name, unit in units.items()],
    }
    return json.dumps(
        {"_aws": {"Timestamp": 1796032428334, "CloudWatchMetrics": [directive]}, **values},
        separators=(",", ":"),
    )


def exposition(*lines: str, buckets: tuple[float, ...] = (0.01, 0.1)) -> str:
    registry = Registry(buckets)
    for line in lines:
        registry.observe(line)
    return registry.exposition()


def test_a_count_with_one_value_is_a_counter_labelled_by_its_dimensions_without_the_service():
    line = emf(
        {"service": "streaming", "role": "viewer", "transport": "websocket", "ConnectionsOpened": [1.0]},
        {"ConnectionsOpened": "Count"},
        ["service", "role", "transport"],
    )
    assert exposition(line, line) == (
        "# HELP streaming_connections_opened_total ConnectionsOpened (Count) from EMF\n"
        "# TYPE streaming_connections_opened_total counter\n"
        'streaming_connections_opened_total{role="viewer",transport="websocket"} 2.0\n'
    )


def test_a_list_of_values_adds_up_and_a_bare_number_counts_as_one_value():
    listed = emf(
        {"service": "streaming", "FramesDelivered": [2.0, 3.0]}, {"FramesDelivered": "Count"}, ["service"]
    )
    bare = emf({"service": "streaming", "FramesDelivered": 4}, {"FramesDelivered": "Count"}, ["service"])
    assert exposition(listed, bare) == (
        "# HELP streaming_frames_delivered_total FramesDelivered (Count) from EMF\n"
        "# TYPE streaming_frames_delivered_total counter\n"
        "streaming_frames_delivered_total 9.0\n"
    )


def test_several_metrics_of_one_document_each_become_a_family_and_times_become_histograms_in_seconds():
    line = emf(
        {"service": "streaming", "EventsPublished": [0.0], "DeliveryLatency": [5.0, 100.0, 250.0]},
        {"EventsPublished": "Count", "DeliveryLatency": "Milliseconds"},
        ["service"],
    )
    stream = emf(
        {"service": "streaming", "SseStreamSeconds": [0.5]}, {"SseStreamSeconds": "Seconds"}, ["service"]
    )
    assert exposition(line, stream) == (
        "# HELP streaming_delivery_latency_seconds DeliveryLatency (Milliseconds) from EMF\n"
        "# TYPE streaming_delivery_latency_seconds histogram\n"
        'streaming_delivery_latency_seconds_bucket{le="0.01"} 1\n'
        'streaming_delivery_latency_seconds_bucket{le="0.1"} 2\n'
        'streaming_delivery_latency_seconds_bucket{le="+Inf"} 3\n'
        "streaming_delivery_latency_seconds_sum 0.355\n"
        "streaming_delivery_latency_seconds_count 3\n"
        "# HELP streaming_events_published_total EventsPublished (Count) from EMF\n"
        "# TYPE streaming_events_published_total counter\n"
        "streaming_events_published_total 0.0\n"
        "# HELP streaming_sse_stream_seconds SseStreamSeconds (Seconds) from EMF\n"
        "# TYPE streaming_sse_stream_seconds histogram\n"
        'streaming_sse_stream_seconds_bucket{le="0.01"} 0\n'
        'streaming_sse_stream_seconds_bucket{le="0.1"} 0\n'
        'streaming_sse_stream_seconds_bucket{le="+Inf"} 1\n'
        "streaming_sse_stream_seconds_sum 0.5\n"
        "streaming_sse_stream_seconds_count 1\n"
    )


def test_each_dimension_set_of_a_document_is_a_series_of_its_own_as_in_cloudwatch():
    line = emf(
        {"service": "streaming", "function_name": "ws-authorizer", "ColdStart": [1.0]},
        {"ColdStart": "Count"},
        ["service"],
        ["service", "function_name"],
    )
    assert exposition(line) == (
        "# HELP streaming_cold_start_total ColdStart (Count) from EMF\n"
        "# TYPE streaming_cold_start_total counter\n"
        "streaming_cold_start_total 1.0\n"
        'streaming_cold_start_total{function_name="ws-authorizer"} 1.0\n'
    )


def test_gauges_keep_the_last_value_written_and_labels_are_escaped():
    def open_connections(value: float, role: str) -> str:
        return emf(
            {"service": "streaming", "transport": "sse", "role": role, "ConnectionsOpen": [value]},
            {"ConnectionsOpen": "Count"},
            ["service", "transport", "role"],
        )

    odd = 'a "quoted"\\back\nslash'
    assert exposition(
        open_connections(3, "viewer"), open_connections(0, "viewer"), open_connections(2, odd)
    ) == (
        "# HELP streaming_connections_open ConnectionsOpen (Count) from EMF\n"
        "# TYPE streaming_connections_open gauge\n"
        'streaming_connections_open{role="a \\"quoted\\"\\\\back\\nslash",transport="sse"} 2.0\n'
        'streaming_connections_open{role="viewer",transport="sse"} 0.0\n'
    )


def test_lines_that_are_no_emf_document_of_ours_or_are_broken_are_ignored():
    good = emf(
        {"service": "streaming", "MessagesReceived": [1.0]}, {"MessagesReceived": "Count"}, ["service"]
    )
    other_namespace = good.replace("RealtimeStreaming", "SomeoneElse")
    missing_dimension = emf({"MessagesReceived": [1.0]}, {"MessagesReceived": "Count"}, ["service"])
    not_a_number = emf({"service": "streaming", "MessagesReceived": ["1"]}, {"MessagesReceived": "Count"}, [])
    a_bool = emf({"service": "streaming", "MessagesReceived": True}, {"MessagesReceived": "Count"}, [])
    lines = [
        '{"level":"INFO","message":"connected"}',
        '{"_aws": not json',
        '{"_aws":{"CloudWatchMetrics":"nonsense"}}',
        '{"_aws":{}}',
        "plain text",
        other_namespace,
        missing_dimension,
        not_a_number,
        a_bool,
        good,
    ]
    assert exposition(*lines) == (
        "# HELP streaming_messages_received_total MessagesReceived (Count) from EMF\n"
        "# TYPE streaming_messages_received_total counter\n"
        "streaming_messages_received_total 1.0\n"
    )
    assert exposition(*lines[:-1]) == ""


def test_names_are_snake_case_with_the_unit_in_the_suffix():
    assert metric_name("FanOutLookupTime") == "streaming_fan_out_lookup_time"
    assert metric_name("HTTPErrors") == "streaming_http_errors"
    assert family_of("FanOutLookupTime", "Milliseconds") == (
        "streaming_fan_out_lookup_time_seconds",
        "histogram",
    )
    assert family_of("SseStreamSeconds", "Seconds") == ("streaming_sse_stream_seconds", "histogram")
    assert family_of("AuthFailures", "Count") == ("streaming_auth_failures_total", "counter")
    assert family_of("ConnectionsActive", "Count") == ("streaming_connections_active", "gauge")
    assert family_of("PayloadBytes", "Bytes") == ("streaming_payload_bytes", "gauge")


def test_what_the_handlers_print_reaches_the_registry_through_the_console_zeros_of_a_schedule_too(
    monkeypatch,
):
    from local import console as local_console

    registry = Registry()
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", Console(out, registry.observe))
    count("ConnectionsOpened", role="analyst", transport="sse")
    metrics.add_metric(name="FanOutPostTime", unit=MetricUnit.Milliseconds, value=7)
    metrics.flush_metrics()
    token = local_console.scheduled.set(True)
    try:
        metrics.add_metric(name="ExpiredConnectionsClosed", unit=MetricUnit.Count, value=0)
        metrics.flush_metrics()
    finally:
        local_console.scheduled.reset(token)

    text = registry.exposition()
    assert 'streaming_connections_opened_total{role="analyst",transport="sse"} 1.0\n' in text
    assert "streaming_fan_out_post_time_seconds_count 1\n" in text
    assert "streaming_expired_connections_closed_total 0.0\n" in text  # counted, though not printed
    assert "ExpiredConnectionsClosed" not in out.getvalue()
