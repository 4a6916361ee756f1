"""The dashboard in every environment, read from its synthesized body: the rows in order under their
headers, the service levels against the configured objectives, and the metrics of every function,
table, the WebSocket API, SSE and the connection stats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from stacks.config import load
from streaming import constants as c
from tests.infra.templates import Stack, flatten

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("synth")]

ROWS = [
    "Service levels",
    "Traffic",
    "Errors",
    "Lambda functions",
    "WebSocket API",
    "DynamoDB",
    "SSE",
    "Connection stats",
    "Graceful degradation",
]
TRANSPORTS = ("websocket", "sse")


@dataclass(frozen=True)
class Series:
    """One line of a graph widget's `metrics`: a metric or a math expression, with its options."""

    namespace: str | None = None
    name: str | None = None
    dimensions: dict[str, str] = field(default_factory=dict)
    expression: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, line: list[Any]) -> Series:
        *fields, options = line if isinstance(line[-1], dict) else [*line, {}]
        if not fields:
            return cls(expression=options["expression"], options=options)
        namespace, name, *pairs = fields
        return cls(namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)), options=options)

    @property
    def stat(self) -> str:
        return self.options.get("stat", "Average")  # a dashboard's default statistic

    @property
    def own(self) -> tuple[str | None, dict[str, str]]:
        """Name and dimensions besides `service`, for one of our metrics."""
        assert (self.namespace, self.dimensions.get("service")) == (c.METRICS_NAMESPACE, c.SERVICE_NAME)
        return self.name, {k: v for k, v in self.dimensions.items() if k != "service"}


@dataclass(frozen=True)
class Widget:
    properties: dict[str, Any]

    @property
    def title(self) -> str | None:
        return self.properties.get("title")

    @property
    def series(self) -> list[Series]:
        return [Series.parse(line) for line in self.properties.get("metrics", [])]

    def by_id(self, metric_id: str) -> Series:
        [found] = [s for s in self.series if s.options.get("id") == metric_id]
        return found

    @property
    def annotations(self) -> list[float]:
        return [a["value"] for a in self.properties.get("annotations", {}).get("horizontal", [])]


def rows(stack: Stack, environment: str) -> dict[str, list[Widget]]:
    """Row header -> the widgets under it, in the order the dashboard shows them."""
    [dashboard] = stack.of_type("AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == f"streaming-{environment}"
    body = json.loads(flatten(dashboard["Properties"]["DashboardBody"]))
    found: dict[str, list[Widget]] = {}
    for widget in sorted(body["widgets"], key=lambda w: (w["y"], w["x"])):
        markdown = widget["properties"].get("markdown", "")
        if markdown.startswith("# "):
            found[markdown.removeprefix("# ")] = []
        else:
            found[list(found)[-1]].append(Widget(widget["properties"]))
    return found


def titled(row: list[Widget], title: str) -> Widget:
    [widget] = [w for w in row if w.title == title]
    return widget


def series(row: list[Widget]) -> list[Series]:
    return [s for widget in row for s in widget.series]


def test_the_rows_come_in_order_and_the_url_opens_the_dashboard(stack, environment):
    assert list(rows(stack, environment)) == ROWS
    url = flatten(stack.outputs[c.OUTPUT_DASHBOARD_URL]["Value"])
    assert url == (
        "https://<AWS::Region>.console.aws.amazon.com/cloudwatch/home?region=<AWS::Region>"
        f"#dashboards/dashboard/streaming-{environment}"
    )


def test_the_first_row_shows_the_three_service_levels_against_their_objectives(stack, environment):
    row = rows(stack, environment)["Service levels"]
    objectives = load(environment).alarms
    assert [widget.title for widget in row] == [
        "Delivery success (%)",
        "End-to-end latency (ms)",
        "Probe success (%)",
        "Probe: publish to receive (ms)",
    ]

    success = titled(row, "Delivery success (%)")
    [shown] = [s for s in success.series if s.expression]
    assert shown.expression == "100 * delivered / (delivered + failed)"
    for metric_id, name in (("delivered", "FramesDelivered"), ("failed", "FramesFailed")):
        part = success.by_id(metric_id)
        assert (part.own, part.stat, part.options["visible"]) == ((name, {}), "Sum", False)
    assert success.annotations == [objectives.delivery_success_percent]

    latency = titled(row, "End-to-end latency (ms)")
    assert [(s.own, s.stat) for s in latency.series] == [
        (("DeliveryLatency", {}), "p50"),
        (("DeliveryLatency", {}), "p99"),
        (("SseDeliveryLatency", {}), "p50"),
        (("SseDeliveryLatency", {}), "p99"),
    ]
    assert latency.annotations == [objectives.delivery_latency_p99_ms]

    probe = titled(row, "Probe success (%)")
    for transport in TRANSPORTS:
        [shown] = [s for s in probe.series if s.options.get("label") == transport]
        assert shown.expression == f"100 * {transport}"
        part = probe.by_id(transport)
        assert (part.own, part.stat) == (("ProbeSuccess", {"transport": transport}), "Average")
    assert probe.annotations == [objectives.probe_success_percent]

    assert [(s.own, s.stat) for s in titled(row, "Probe: publish to receive (ms)").series] == [
        (("ProbeLatency", {"transport": transport}), p) for transport in TRANSPORTS for p in ("p50", "p99")
    ]


def test_traffic_shows_every_configured_event_type(stack, environment):
    widget = titled(rows(stack, environment)["Traffic"], "Events published by type")
    assert [(s.own, s.stat) for s in widget.series] == [
        (("EventsPublished", {"type": t}), "Sum") for t in load(environment).event_types
    ]


def test_errors_show_every_alarm_the_dead_letter_queue_and_auth_failures_by_reason(stack, environment):
    row = rows(stack, environment)["Errors"]
    alarms = {*stack.of_type("AWS::CloudWatch::Alarm"), *stack.of_type("AWS::CloudWatch::CompositeAlarm")}
    assert sorted(titled(row, "Alarms").properties["alarms"]) == sorted(f"<{alarm}.Arn>" for alarm in alarms)

    [queue] = stack.of_type("AWS::SQS::Queue")
    [depth] = titled(row, "Dead-letter queue (events not stored)").series
    assert (depth.namespace, depth.name, depth.dimensions, depth.stat) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": f"<{queue}.QueueName>"},
        "Maximum",
    )

    total, by_reason = titled(row, "Authentication failures").series
    assert (total.own, total.stat) == (("AuthFailures", {}), "Sum")
    assert by_reason.expression == (
        """SEARCH('{RealtimeStreaming,service,transport,reason} MetricName="AuthFailures"', 'Sum', 300)"""
    )
    assert [s.own[0] for s in series(row) if s.namespace == c.METRICS_NAMESPACE] == [
        "FramesFailed",
        "ConnectionsGone",
        "EventsRejected",
        "RequestsRejected",
        "ConnectionsRefused",
        "AuthFailures",
    ]


def test_every_function_shows_errors_throttles_duration_and_concurrency(stack, environment):
    shown: dict[str, set[tuple[str, str]]] = {}
    for s in series(rows(stack, environment)["Lambda functions"]):
        if s.namespace == "AWS/Lambda":
            shown.setdefault(s.dimensions["FunctionName"], set()).add((s.name, s.stat))
    assert set(shown) == {f"<{function}>" for function in stack.of_type("AWS::Lambda::Function")}
    for function, metrics in shown.items():
        assert {
            ("Errors", "Sum"),
            ("Throttles", "Sum"),
            ("Duration", "p99"),
            ("ConcurrentExecutions", "Maximum"),
        } <= metrics, function


def test_the_websocket_api_row_reads_the_stack_api_and_stage(stack, environment):
    shown = {(s.name, s.stat) for s in series(rows(stack, environment)["WebSocket API"])}
    assert shown == {
        ("ConnectCount", "Sum"),
        ("MessageCount", "Sum"),
        ("IntegrationError", "Sum"),
        ("ClientError", "Sum"),
        ("ExecutionError", "Sum"),
        ("IntegrationLatency", "p50"),
        ("IntegrationLatency", "p99"),
    }
    for s in series(rows(stack, environment)["WebSocket API"]):
        assert s.namespace == "AWS/ApiGateway"
        assert s.dimensions == {"ApiId": f"<{stack.api}>", "Stage": environment}


def test_both_tables_show_throttles_latency_and_consumed_capacity(stack, environment):
    row = series(rows(stack, environment)["DynamoDB"])
    for output in (c.OUTPUT_EVENTS_TABLE, c.OUTPUT_CONNECTIONS_TABLE):
        table = f"<{stack.table(output)}>"
        shown = {
            s.name for s in row if s.namespace == "AWS/DynamoDB" and s.dimensions == {"TableName": table}
        }
        assert {
            "ReadThrottleEvents",
            "WriteThrottleEvents",
            "ConsumedReadCapacityUnits",
            "ConsumedWriteCapacityUnits",
        } <= shown
        [latency] = [
            s
            for s in row
            if s.expression and "SuccessfulRequestLatency" in s.expression and table in s.expression
        ]
        assert '"AWS/DynamoDB","TableName","Operation"' in latency.expression  # by operation


def test_sse_shows_how_streams_end_and_how_many_are_open_against_the_cap(stack, environment):
    row = rows(stack, environment)["SSE"]
    assert [s.own for s in titled(row, "Streams ended").series] == [
        ("SseStreamsEnded", {"ending": ending})
        for ending in ("planned", "stalled", "replaced", "client left", "failed")
    ]
    [open_streams] = titled(row, "Open streams (function concurrency)").series
    sse, _ = stack.functions()[c.SSE_START_SCRIPT]
    assert (open_streams.name, open_streams.dimensions) == (
        "ConcurrentExecutions",
        {"FunctionName": f"<{sse}>"},
    )
    cap = load(environment).sse.reserved_concurrency
    assert titled(row, "Open streams (function concurrency)").annotations == (
        [cap] if cap is not None else []
    )


def test_connection_stats_show_open_connections_by_role_and_transport(stack, environment):
    row = rows(stack, environment)["Connection stats"]
    roles = list(load(environment).roles)
    for transport in TRANSPORTS:
        widget = titled(row, f"Open connections by role: {transport}")
        assert widget.properties["stacked"] is True  # the top is the total
        assert [(s.own, s.stat) for s in widget.series] == [
            (("ConnectionsOpen", {"transport": transport, "role": role}), "Maximum") for role in roles
        ]
    assert [s.own for s in titled(row, "Active connections").series] == [
        ("ConnectionsActive", {"transport": transport}) for transport in TRANSPORTS
    ]

    opened_and_closed = titled(row, "Opened and closed")
    for transport in TRANSPORTS:
        [total] = [s for s in opened_and_closed.series if s.options.get("label") == f"{transport} opened"]
        ids = [f"{transport}_{i}" for i in range(len(roles))]
        assert total.expression == f"SUM([{', '.join(ids)}])"
        assert [opened_and_closed.by_id(i).own for i in ids] == [
            ("ConnectionsOpened", {"role": role, "transport": transport}) for role in roles
        ]
    assert [s.own for s in titled(row, "Disconnects").series if s.name == "Disconnects"] == [
        ("Disconnects", {"transport": transport, "kind": kind})
        for transport in TRANSPORTS
        for kind in ("planned", "unplanned")
    ]
    # The sweep's share: connections it closed at their expiry, and those it told to reconnect first.
    assert {s.name for s in titled(row, "Disconnects").series} >= {
        "ExpiredConnectionsClosed",
        "ReconnectNotices",
    }


@pytest.mark.degradation
def test_degradation_shows_the_events_coalesced_per_transport_and_coalescible_type(stack, environment):
    [widget] = rows(stack, environment)["Graceful degradation"]
    assert [(s.own, s.stat) for s in widget.series] == [
        (("EventsCoalesced", {"transport": transport, "type": t}), "Sum")
        for transport in TRANSPORTS
        for t in load(environment).degradation.coalesce_types
    ]
