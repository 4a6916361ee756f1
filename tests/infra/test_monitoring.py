"""Alarms in every environment: the two service levels, the signs of trouble, the composite, and the
encrypted topic they notify (with e-mail where `alarm_email` is set)."""

from __future__ import annotations

from typing import Any

from stacks.config import load
from streaming import constants as c
from tests.infra.templates import Stack

FUNCTIONS = (
    "PublishHttp",
    "PublishEventBridge",
    "RouteHandler",
    "ConnectAuthorizer",
    "FanoutWorker",
    "ExpirySweeper",
    "Sse",
    "Probe",
)
PROBE_SUCCESS = {"ProbeWebSocket": "websocket", "ProbeSse": "sse"}


def alarms(stack: Stack, environment: str) -> dict[str, dict[str, Any]]:
    """By name without the `streaming-<env>-` prefix."""
    prefix = f"streaming-{environment}-"
    found = {}
    for alarm in stack.of_type("AWS::CloudWatch::Alarm").values():
        properties = alarm["Properties"]
        assert properties["AlarmName"].startswith(prefix)
        found[properties["AlarmName"].removeprefix(prefix)] = properties
    return found


def topic(stack: Stack) -> str:
    [logical_id] = stack.of_type("AWS::SNS::Topic")
    return logical_id


def test_every_alarm_notifies_the_topic_and_no_data_is_no_breach_but_for_the_probe(stack, environment):
    found = alarms(stack, environment)
    expected = {"DeliverySuccess", "DeliveryLatencyP99", "UndeliveredEvents", "AuthFailures"}
    expected |= {*PROBE_SUCCESS, "ProbeLatencyP99"}
    expected |= {f"{name}{metric}" for name in FUNCTIONS for metric in ("Errors", "Throttles")}
    expected |= {"EventsTableThrottles", "ConnectionsTableThrottles"}
    if load(environment).sse.reserved_concurrency is not None:
        expected.add("SseStreamsAtCap")
    assert set(found) == expected
    for name, alarm in found.items():
        assert alarm["AlarmActions"] == [{"Ref": topic(stack)}], name
        # A probe that stopped running is a failure: its success alarms breach on no data.
        assert alarm["TreatMissingData"] == ("breaching" if name in PROBE_SUCCESS else "notBreaching"), name
        assert "docs/operations.md" in alarm["AlarmDescription"], name


def test_delivery_success_is_frames_delivered_over_all_frames_below_the_threshold(stack, environment):
    alarm = alarms(stack, environment)["DeliverySuccess"]
    thresholds = load(environment).alarms
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (
        thresholds.delivery_success_percent,
        "LessThanThreshold",
    )
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 2)
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    assert queries["expr_1"]["Expression"] == "100 * delivered / (delivered + failed)"
    for query_id, metric_name in (("delivered", "FramesDelivered"), ("failed", "FramesFailed")):
        stat = queries[query_id]["MetricStat"]
        assert stat["Metric"]["Namespace"] == c.METRICS_NAMESPACE
        assert stat["Metric"]["MetricName"] == metric_name
        assert stat["Metric"]["Dimensions"] == [{"Name": "service", "Value": c.SERVICE_NAME}]
        assert (stat["Stat"], stat["Period"]) == ("Sum", 300)
        assert queries[query_id]["ReturnData"] is False


def test_delivery_latency_is_the_p99_of_what_the_fan_out_measures(stack, environment):
    alarm = alarms(stack, environment)["DeliveryLatencyP99"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (c.METRICS_NAMESPACE, "DeliveryLatency")
    assert alarm["Dimensions"] == [{"Name": "service", "Value": c.SERVICE_NAME}]
    assert (alarm["ExtendedStatistic"], alarm["Period"]) == ("p99", 300)
    assert alarm["Threshold"] == load(environment).alarms.delivery_latency_p99_ms
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 2)


def test_trouble_alarms_fire_on_the_first_bad_period(stack, environment):
    found = alarms(stack, environment)
    undelivered = found["UndeliveredEvents"]
    assert undelivered["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert (undelivered["Statistic"], undelivered["Threshold"]) == ("Maximum", 0)
    refused = found["AuthFailures"]  # both transports, all reasons: the total each refusal also counts
    assert (refused["MetricName"], refused["Statistic"]) == ("AuthFailures", "Sum")
    assert refused["Dimensions"] == [{"Name": "service", "Value": "streaming"}]
    assert refused["Threshold"] == load(environment).alarms.auth_failures_per_5_minutes
    for name in FUNCTIONS:
        for metric in ("Errors", "Throttles"):
            alarm = found[f"{name}{metric}"]
            assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", metric)
            assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 0)
    throttles = found["EventsTableThrottles"]
    names = {q["MetricStat"]["Metric"]["MetricName"] for q in throttles["Metrics"] if "MetricStat" in q}
    assert names == {"ReadThrottleEvents", "WriteThrottleEvents"}
    for alarm in found.values():
        if "DatapointsToAlarm" in alarm and alarm["EvaluationPeriods"] == 1:
            assert alarm["DatapointsToAlarm"] == 1


def test_one_composite_alarm_says_streaming_is_degraded_when_any_alarm_is(stack, environment):
    [composite] = stack.of_type("AWS::CloudWatch::CompositeAlarm").values()
    properties = composite["Properties"]
    assert properties["AlarmName"] == f"streaming-{environment}-degraded"
    rule = str(properties["AlarmRule"])
    for logical_id in stack.of_type("AWS::CloudWatch::Alarm"):
        assert logical_id in rule
    assert "AlarmActions" not in properties  # each alarm notifies by itself


def test_the_topic_is_encrypted_with_a_key_cloudwatch_may_use_and_mails_where_configured(stack, environment):
    _, properties = stack.one("AWS::SNS::Topic")
    [key_id] = stack.of_type("AWS::KMS::Key")
    assert properties["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    key = stack.resources[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    principals = [statement["Principal"] for statement in key["KeyPolicy"]["Statement"]]
    assert {"Service": "cloudwatch.amazonaws.com"} in principals
    subscriptions = [s["Properties"] for s in stack.of_type("AWS::SNS::Subscription").values()]
    email = load(environment).alarm_email
    assert subscriptions == (
        [{"Protocol": "email", "Endpoint": email, "TopicArn": {"Ref": topic(stack)}}] if email else []
    )


def test_sse_streams_at_the_reserved_concurrency_alarm_where_there_is_a_cap(stack, environment):
    cap = load(environment).sse.reserved_concurrency
    alarm = alarms(stack, environment).get("SseStreamsAtCap")
    if cap is None:
        assert alarm is None  # no reservation: streams share the account's concurrency
        return
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "AWS/Lambda",
        "ConcurrentExecutions",
        "Maximum",
    )
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (cap, "GreaterThanOrEqualToThreshold")


def test_probe_success_per_transport_is_the_share_of_runs_that_saw_their_event(stack, environment):
    found = alarms(stack, environment)
    threshold = load(environment).alarms.probe_success_percent
    for name, transport in PROBE_SUCCESS.items():
        alarm = found[name]
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (threshold, "LessThanThreshold"), name
        assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 2), name
        assert alarm["TreatMissingData"] == "breaching", name
        assert alarm["AlarmActions"] == [{"Ref": topic(stack)}], name
        queries = {query["Id"]: query for query in alarm["Metrics"]}
        assert queries["expr_1"]["Expression"] == "100 * success"
        stat = queries["success"]["MetricStat"]
        assert (stat["Metric"]["Namespace"], stat["Metric"]["MetricName"]) == (
            c.METRICS_NAMESPACE,
            "ProbeSuccess",
        )
        assert stat["Metric"]["Dimensions"] == [
            {"Name": "service", "Value": c.SERVICE_NAME},
            {"Name": "transport", "Value": transport},
        ]
        assert (stat["Stat"], stat["Period"]) == ("Average", 300)
        assert queries["success"]["ReturnData"] is False


def test_probe_latency_is_the_websocket_p99_held_to_the_service_level(stack, environment):
    alarm = alarms(stack, environment)["ProbeLatencyP99"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (c.METRICS_NAMESPACE, "ProbeLatency")
    assert alarm["Dimensions"] == [
        {"Name": "service", "Value": c.SERVICE_NAME},
        {"Name": "transport", "Value": "websocket"},
    ]
    assert (alarm["ExtendedStatistic"], alarm["Period"]) == ("p99", 300)
    assert alarm["Threshold"] == load(environment).alarms.delivery_latency_p99_ms
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3, 2)
    assert alarm["TreatMissingData"] == "notBreaching"  # no run, no latency: the success alarms say so
    assert alarm["AlarmActions"] == [{"Ref": topic(stack)}]


def test_without_a_probe_there_are_no_probe_alarms(oidc):
    names = {a["Properties"]["AlarmName"] for a in oidc.stack.of_type("AWS::CloudWatch::Alarm").values()}
    assert not [name for name in names if "-Probe" in name]
    assert "streaming-prod-DeliverySuccess" in names
