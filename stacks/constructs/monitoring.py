"""Alarms to an SNS topic (e-mail from `alarm_email`): the service levels (delivery success and
end-to-end latency, from the metrics the functions emit), and the signs of trouble before those move:
function errors and throttles, events EventBridge could not hand over, DynamoDB throttling, a spike
of authentication failures, SSE streams at their cap. A composite alarm says "streaming degraded" when
any of them is in alarm. Every alarm notifies the topic; the composite has no action of its own (one
place to page on or to show). docs/operations.md has a runbook section per alarm, under the same
names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.metrics import PERIOD, delivery_success_percent, service_metric

if TYPE_CHECKING:
    from stacks.constructs.probe import SyntheticProbe

# A service level is breached when 2 of the last 3 five-minute periods miss it: one slow period is
# noise, two are a trend someone should look at.
SLO_EVALUATION_PERIODS, SLO_DATAPOINTS = 3, 2


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        functions: Mapping[str, lambda_.Function],
        tables: Mapping[str, dynamodb.TableV2],
        undelivered: sqs.IQueue,
        probe: SyntheticProbe | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.topic = self._build_topic()
        thresholds = config.alarms
        slo = [
            self._alarm(
                "DeliverySuccess",
                delivery_success_percent(),
                threshold=thresholds.delivery_success_percent,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                description=f"Live delivery success below {thresholds.delivery_success_percent}%",
                slo=True,
            ),
            self._alarm(
                "DeliveryLatencyP99",
                service_metric("DeliveryLatency", "p99"),
                threshold=thresholds.delivery_latency_p99_ms,
                description=f"p99 from store to delivery above {thresholds.delivery_latency_p99_ms} ms",
                slo=True,
            ),
        ]
        if probe is not None:
            slo += self._probe_alarms()
        trouble = [
            self._alarm(
                "UndeliveredEvents",
                undelivered.metric_approximate_number_of_messages_visible(statistic="Maximum", period=PERIOD),
                threshold=0,
                description="Events EventBridge or the publish function could not store wait in the queue",
            ),
            self._alarm(
                "AuthFailures",
                service_metric("AuthFailures", "Sum"),
                threshold=thresholds.auth_failures_per_5_minutes,
                description="A spike of refused tokens or origins on either transport (bad, expired, forged)",
            ),
        ]
        for name, function in functions.items():
            for metric, what in (("Errors", "errors"), ("Throttles", "throttled invocations")):
                trouble.append(
                    self._alarm(
                        f"{name}{metric}",
                        function.metric(metric, statistic="Sum", period=PERIOD),
                        threshold=0,
                        description=f"The {name} function has {what}",
                    )
                )
        cap = config.sse.reserved_concurrency
        if cap is not None:  # each open stream holds one invocation: at the cap, new streams are refused
            trouble.append(
                self._alarm(
                    "SseStreamsAtCap",
                    functions["Sse"].metric("ConcurrentExecutions", statistic="Maximum", period=PERIOD),
                    threshold=cap,
                    comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    description=f"Open SSE streams reached the function's reserved concurrency ({cap})",
                )
            )
        for name, table in tables.items():
            trouble.append(
                self._alarm(
                    f"{name}TableThrottles",
                    cloudwatch.MathExpression(
                        expression="reads + writes",
                        using_metrics={
                            "reads": table.metric("ReadThrottleEvents", statistic="Sum", period=PERIOD),
                            "writes": table.metric("WriteThrottleEvents", statistic="Sum", period=PERIOD),
                        },
                        label="Throttled requests",
                        period=PERIOD,
                    ),
                    threshold=0,
                    description=f"DynamoDB throttles requests to the {name.lower()} table",
                )
            )
        self.alarms = [*slo, *trouble]
        self.degraded = cloudwatch.CompositeAlarm(
            self,
            "Degraded",
            composite_alarm_name=f"streaming-{config.name}-degraded",
            alarm_description="Streaming degraded: at least one of the stack's alarms is in alarm",
            alarm_rule=cloudwatch.AlarmRule.any_of(*self.alarms),
        )  # no action of its own: each alarm notifies; this one is the single state to page on or show

    def _probe_alarms(self) -> list[cloudwatch.Alarm]:
        """The probe's runs (one a minute) that saw their event, per transport, and the WebSocket's
        publish-to-receive p99 (of five runs a period: the slowest). A probe that stopped running is
        itself a failure: no data breaches the success alarms. SSE's latency is not held to the service
        level: a stream whose relay to the WebSocket API fails falls back to polling the store
        (`sse.poll_interval_ms`, 500 ms by default, counted by `SsePushFallbacks`)."""
        thresholds = self._config.alarms
        alarms = [
            self._alarm(
                f"Probe{name}",
                cloudwatch.MathExpression(
                    expression="100 * success",
                    using_metrics={"success": service_metric("ProbeSuccess", "Average", transport=transport)},
                    label=f"Probe runs that saw their event over {name} (%)",
                    period=PERIOD,
                ),
                threshold=thresholds.probe_success_percent,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                description=f"Synthetic probe over {name} succeeded in less than "
                f"{thresholds.probe_success_percent}% of its runs, or did not run",
                slo=True,
                missing=cloudwatch.TreatMissingData.BREACHING,
            )
            for name, transport in (("WebSocket", "websocket"), ("Sse", "sse"))
        ]
        alarms.append(
            self._alarm(
                "ProbeLatencyP99",
                service_metric("ProbeLatency", "p99", transport="websocket"),
                threshold=thresholds.delivery_latency_p99_ms,
                description="Synthetic probe: p99 from publish to receipt over WebSocket above "
                f"{thresholds.delivery_latency_p99_ms} ms",
                slo=True,
            )
        )
        return alarms

    def _build_topic(self) -> sns.Topic:
        # CloudWatch publishes to an encrypted topic only with a key whose policy lets it (the AWS
        # managed SNS key's cannot), hence a key of the stack's own.
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"Encrypts the streaming alarm topic ({self._config.name})",
            enable_key_rotation=True,
        )
        key.grant(iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"Streaming alarms ({self._config.name})",
            master_key=key,
            enforce_ssl=True,
        )
        if self._config.alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(self._config.alarm_email))
        return topic

    def _alarm(
        self,
        name: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        slo: bool = False,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """No data is not a breach (no traffic, no deliveries, no errors) unless `missing` says so."""
        alarm = cloudwatch.Alarm(
            self,
            name,
            alarm_name=f"streaming-{self._config.name}-{name}",
            alarm_description=description + " (docs/operations.md)",
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=SLO_EVALUATION_PERIODS if slo else 1,
            datapoints_to_alarm=SLO_DATAPOINTS if slo else 1,
            treat_missing_data=missing,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        return alarm
