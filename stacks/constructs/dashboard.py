"""The environment's CloudWatch dashboard, `streaming-<env>`, one row per concern under a header: the
service levels first, then traffic, errors, the Lambda functions, the WebSocket API, DynamoDB, SSE and
connection stats. docs/operations.md says how to read it.

cdk-monitoring-constructs lays out the dashboard and draws the Lambda and DynamoDB sections (errors,
throttles, duration, concurrency; throttles, latency, consumed capacity). It has nothing for WebSocket
APIs or for our own metrics, so those rows are plain CloudWatch widgets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import cdk_monitoring_constructs as monitoring
from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.metrics import PERIOD, delivery_success_percent, service_metric
from streaming import constants as c

TRANSPORTS = ("websocket", "sse")
SSE_ENDINGS = ("planned", "stalled", "replaced", "client left", "failed")  # streaming.subscription.Ending
DISCONNECT_KINDS = ("planned", "unplanned")
WIDTH = 24  # a dashboard row
HEIGHT = 6


def row(*widgets: cloudwatch.IWidget) -> cloudwatch.IWidget:
    """Widgets side by side, as one widget for the layout. (The cast: the Python class of Row lacks
    the IWidget protocol's `warnings` members; the object behind it, in the jsii runtime, has them.)"""
    return cast(cloudwatch.IWidget, cloudwatch.Row(*widgets))


def graph(
    title: str,
    metrics: Sequence[cloudwatch.IMetric],
    *,
    width: int = 6,
    annotations: Iterable[cloudwatch.HorizontalAnnotation] = (),
    stacked: bool = False,
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title,
        left=list(metrics),
        left_annotations=list(annotations),
        stacked=stacked,
        width=width,
        height=HEIGHT,
    )


def threshold(value: float, label: str) -> cloudwatch.HorizontalAnnotation:
    return cloudwatch.HorizontalAnnotation(value=value, label=label, color=cloudwatch.Color.RED)


def percentiles(name: str, label: str, **dimensions: str) -> list[cloudwatch.Metric]:
    return [service_metric(name, p, label=f"{label} {p}", **dimensions) for p in ("p50", "p99")]


def counts(*names: str) -> list[cloudwatch.Metric]:
    return [service_metric(name, "Sum", label=name) for name in names]


def search(schema: str, metric_name: str, label: str) -> cloudwatch.MathExpression:
    """Every series of a metric whose dimension values are not known at synth (e.g. a refusal's
    reason); `label` may name them with ${PROP('Dim.<name>')}."""
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{c.METRICS_NAMESPACE},{schema}}} MetricName=\"{metric_name}\"', "
        f"'Sum', {int(PERIOD.to_seconds())})",
        label=label,
        period=PERIOD,
    )


class Dashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        functions: Mapping[str, lambda_.Function],
        tables: Mapping[str, dynamodb.TableV2],
        websocket_stage: apigwv2.WebSocketStage,
        undelivered: sqs.IQueue,
        alarms: Sequence[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.dashboard_name = f"streaming-{config.name}"
        layout = monitoring.MonitoringFacade(
            self,
            "Facade",
            dashboard_factory=monitoring.DefaultDashboardFactory(
                self,
                "Factory",
                dashboard_name_prefix=self.dashboard_name,
                create_dashboard=True,
                create_summary_dashboard=False,
                create_alarm_dashboard=False,
            ),
        )

        layout.add_large_header("Service levels")
        layout.add_widget(row(*self._service_levels()))
        layout.add_large_header("Traffic")
        layout.add_widget(row(*self._traffic()))
        layout.add_large_header("Errors")
        layout.add_widget(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=WIDTH, height=3)
        )
        layout.add_widget(row(*self._errors(undelivered)))
        layout.add_large_header("Lambda functions")
        for name, function in functions.items():
            layout.monitor_lambda_function(
                lambda_function=function,
                human_readable_name=name,
                alarm_friendly_name=name,
                is_iterator=False,  # none reads a Kinesis or DynamoDB stream: no iterator age
                latency_types_to_render=[monitoring.LatencyType.P50, monitoring.LatencyType.P99],
            )
        layout.add_large_header("WebSocket API")
        layout.add_widget(row(*self._websocket_api(websocket_stage)))
        layout.add_large_header("DynamoDB")
        for name, table in tables.items():
            layout.monitor_dynamo_table(
                table=table,
                human_readable_name=name,
                alarm_friendly_name=name,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            )
        layout.add_large_header("SSE")
        layout.add_widget(row(*self._sse(functions["Sse"])))
        layout.add_large_header("Connection stats")
        layout.add_widget(row(*self._connection_stats()))
        layout.add_large_header("Graceful degradation")
        layout.add_widget(row(self._coalesced()))

        region = Stack.of(self).region
        self.url = (
            f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#dashboards/dashboard/{self.dashboard_name}"
        )
        CfnOutput(self, c.OUTPUT_DASHBOARD_URL, key=c.OUTPUT_DASHBOARD_URL, value=self.url)

    def _service_levels(self) -> list[cloudwatch.IWidget]:
        """The three service levels against their objectives: delivery success, end-to-end latency,
        and connection stability as the probe sees it."""
        objectives = self._config.alarms
        probe_success = [
            cloudwatch.MathExpression(
                expression=f"100 * {transport}",
                using_metrics={transport: service_metric("ProbeSuccess", "Average", transport=transport)},
                label=transport,
                period=PERIOD,
            )
            for transport in TRANSPORTS
        ]
        return [
            graph(
                "Delivery success (%)",
                [delivery_success_percent()],
                annotations=[threshold(objectives.delivery_success_percent, "objective")],
            ),
            graph(
                "End-to-end latency (ms)",
                [
                    *percentiles("DeliveryLatency", "websocket"),
                    *percentiles("SseDeliveryLatency", "sse"),
                ],
                annotations=[threshold(objectives.delivery_latency_p99_ms, "p99 objective")],
            ),
            graph(
                "Probe success (%)",
                probe_success,
                annotations=[threshold(objectives.probe_success_percent, "objective")],
            ),
            graph(
                "Probe: publish to receive (ms)",
                [
                    metric
                    for transport in TRANSPORTS
                    for metric in percentiles("ProbeLatency", transport, transport=transport)
                ],
            ),
        ]

    def _traffic(self) -> list[cloudwatch.IWidget]:
        by_type = [
            service_metric("EventsPublished", "Sum", label=t, type=t) for t in self._config.event_types
        ]
        return [
            graph("Events published by type", by_type, stacked=True),
            graph(
                "Publishing",
                counts("EventsPublished", "DuplicatePublishes", "SequenceConflicts", "EventsReplayed"),
            ),
            graph(
                "WebSocket frames and messages",
                counts("FramesDelivered", "FanOutChunksDispatched", "MessagesReceived"),
            ),
            graph(
                "Fan-out time (ms)",
                [*percentiles("FanOutLookupTime", "lookup"), *percentiles("FanOutPostTime", "post")],
            ),
        ]

    def _errors(self, undelivered: sqs.IQueue) -> list[cloudwatch.IWidget]:
        return [
            graph("Delivery failures", counts("FramesFailed", "ConnectionsGone")),
            graph("Refused", counts("EventsRejected", "RequestsRejected", "ConnectionsRefused")),
            graph(
                "Authentication failures",
                [
                    service_metric("AuthFailures", "Sum", label="total"),
                    search(
                        "service,transport,reason",
                        "AuthFailures",
                        label="${PROP('Dim.transport')} ${PROP('Dim.reason')}",
                    ),
                ],
            ),
            graph(
                "Dead-letter queue (events not stored)",
                [
                    undelivered.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=PERIOD, label="messages"
                    )
                ],
            ),
        ]

    def _websocket_api(self, stage: apigwv2.WebSocketStage) -> list[cloudwatch.IWidget]:
        """AWS/ApiGateway by ApiId and Stage."""

        def api(name: str, statistic: str = "Sum") -> cloudwatch.Metric:
            label = name if statistic == "Sum" else f"{name} {statistic}"
            return stage.metric(name, statistic=statistic, period=PERIOD, label=label)

        return [
            graph("Connects and messages", [api("ConnectCount"), api("MessageCount")], width=8),
            graph(
                "Errors",
                [api("IntegrationError"), api("ClientError"), api("ExecutionError")],
                width=8,
            ),
            graph(
                "Integration latency (ms)",
                [api("IntegrationLatency", "p50"), api("IntegrationLatency", "p99")],
                width=8,
            ),
        ]

    def _sse(self, function: lambda_.IFunction) -> list[cloudwatch.IWidget]:
        cap = self._config.sse.reserved_concurrency
        return [
            graph(
                "Streams ended",
                [service_metric("SseStreamsEnded", "Sum", label=e, ending=e) for e in SSE_ENDINGS],
                stacked=True,
            ),
            graph(
                "Stream length (s)",
                [
                    *percentiles("SseStreamSeconds", "length"),
                    service_metric("SseStreamSeconds", "Maximum", label="length max"),
                ],
            ),
            graph("Stalls and tailer restarts", counts("SseStreamsStalled", "SseTailerRestarts")),
            graph(
                "Open streams (function concurrency)",
                [function.metric("ConcurrentExecutions", statistic="Maximum", period=PERIOD, label="open")],
                # each open stream holds one invocation: at the cap, new streams are refused
                annotations=[threshold(cap, "reserved concurrency")] if cap is not None else [],
            ),
        ]

    def _coalesced(self) -> cloudwatch.IWidget:
        """Superseded events not sent to overloaded subscribers, per transport and coalescible type."""
        return graph(
            "Events coalesced under overload",
            [
                service_metric(
                    "EventsCoalesced", "Sum", label=f"{transport} {t}", transport=transport, type=t
                )
                for transport in TRANSPORTS
                for t in self._config.degradation.coalesce_types
            ],
            width=12,
            stacked=True,
        )

    def _connection_stats(self) -> list[cloudwatch.IWidget]:
        """The minute sweep's gauges (open by role, active), and what opened and closed connections."""
        roles = list(self._config.roles)

        def opened(transport: str) -> cloudwatch.MathExpression:
            by_role = {
                f"{transport}_{i}": service_metric("ConnectionsOpened", "Sum", role=role, transport=transport)
                for i, role in enumerate(roles)
            }
            return cloudwatch.MathExpression(
                expression=f"SUM([{', '.join(by_role)}])",
                using_metrics=by_role,
                label=f"{transport} opened",
                period=PERIOD,
            )

        open_by_role = [
            graph(
                f"Open connections by role: {transport}",
                [
                    service_metric("ConnectionsOpen", "Maximum", label=role, transport=transport, role=role)
                    for role in roles
                ],
                stacked=True,
            )
            for transport in TRANSPORTS
        ]
        return [
            *open_by_role,
            graph(
                "Active connections",
                [
                    service_metric("ConnectionsActive", "Maximum", label=transport, transport=transport)
                    for transport in TRANSPORTS
                ],
                width=4,
            ),
            graph(
                "Opened and closed",
                [
                    *(opened(transport) for transport in TRANSPORTS),
                    *(
                        service_metric("ConnectionsClosed", "Sum", label=f"{t} closed", transport=t)
                        for t in TRANSPORTS
                    ),
                    service_metric("ConnectionsAuthorized", "Sum", label="websocket authorized"),
                ],
                width=4,
            ),
            graph(
                "Disconnects",
                [
                    *(
                        service_metric("Disconnects", "Sum", label=f"{t} {kind}", transport=t, kind=kind)
                        for t in TRANSPORTS
                        for kind in DISCONNECT_KINDS
                    ),
                    service_metric("ExpiredConnectionsClosed", "Sum", label="websocket expired"),
                    service_metric("ReconnectNotices", "Sum", label="websocket told to reconnect"),
                ],
                width=4,
            ),
        ]
