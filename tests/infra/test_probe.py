"""The synthetic probe in every environment: scheduled every minute without retries, pointed at the
stack's own endpoints, allowed exactly the signing key and the publish URL; left out, with a warning,
where tokens come from an OIDC issuer."""

from __future__ import annotations

import json

import pytest

from stacks.config import load
from streaming import constants as c
from tests.infra.templates import flatten

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("synth")]


def probe_rules(stack, probe: str) -> dict[str, dict]:
    return {
        logical_id: rule["Properties"]
        for logical_id, rule in stack.of_type("AWS::Events::Rule").items()
        if {"Fn::GetAtt": [probe, "Arn"]}
        in [target["Arn"] for target in rule["Properties"].get("Targets", [])]
    }


def test_the_probe_runs_every_minute_without_retry(stack):
    probe, function = stack.functions()[c.HANDLER_PROBE]
    [(rule_id, rule)] = probe_rules(stack, probe).items()
    assert c.PROBE_INTERVAL_MINUTES == 1
    assert (rule["ScheduleExpression"], rule["State"]) == ("rate(1 minute)", "ENABLED")
    [permission] = [
        resource["Properties"]
        for resource in stack.of_type("AWS::Lambda::Permission").values()
        if resource["Properties"]["FunctionName"] == {"Fn::GetAtt": [probe, "Arn"]}
    ]
    assert (permission["Action"], permission["Principal"], permission["SourceArn"]) == (
        "lambda:InvokeFunction",
        "events.amazonaws.com",
        {"Fn::GetAtt": [rule_id, "Arn"]},
    )
    assert (function["Timeout"], function["MemorySize"]) == (c.PROBE_TIMEOUT_SECONDS, 256)
    assert "ReservedConcurrentExecutions" not in function
    [config] = [
        resource["Properties"]
        for resource in stack.of_type("AWS::Lambda::EventInvokeConfig").values()
        if resource["Properties"]["FunctionName"] == {"Ref": probe}
    ]
    assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (0, 60)


def test_the_probe_reaches_the_stacks_own_endpoints_as_a_role_that_sees_its_event(stack, environment):
    env = stack.environment(c.HANDLER_PROBE)
    outputs = stack.outputs
    assert env[c.ENV_PROBE_WEBSOCKET_URL] == outputs[c.OUTPUT_WEBSOCKET_URL]["Value"]
    assert env[c.ENV_PROBE_SSE_URL] == outputs[c.OUTPUT_SSE_URL]["Value"]
    assert env[c.ENV_PROBE_PUBLISH_URL] == outputs[c.OUTPUT_PUBLISH_URL]["Value"]
    config = load(environment)
    assert env[c.ENV_PROBE_ROLE] == "admin" and c.PROBE_EVENT_TYPE in config.roles["admin"]
    secret_id, _ = stack.one("AWS::SecretsManager::Secret")
    assert {k: v for k, v in env.items() if k.startswith("AUTH_")} == {
        c.ENV_AUTH_MODE: "hs256",
        c.ENV_AUTH_AUDIENCE: config.auth.audience,
        c.ENV_AUTH_ISSUER: f"streaming-{environment}",
        c.ENV_AUTH_ROLE_CLAIM: config.auth.role_claim,
        c.ENV_AUTH_SECRET_ARN: {"Ref": secret_id},
    }
    # A client of the service: nothing about tables or delivery.
    assert not {c.ENV_EVENTS_TABLE, c.ENV_CONNECTIONS_TABLE, c.ENV_MANAGEMENT_URL} & set(env)


def test_the_probe_may_read_the_signing_key_and_invoke_the_publish_url_and_nothing_else(stack):
    secret_id, _ = stack.one("AWS::SecretsManager::Secret")
    publisher, _ = stack.functions()[c.HANDLER_PUBLISH_HTTP]
    assert stack.grants(c.HANDLER_PROBE) == {
        ("secretsmanager:GetSecretValue", f"<{secret_id}>"),
        ("lambda:InvokeFunctionUrl", f"<{publisher}.Arn>"),
        ("lambda:InvokeFunction", f"<{publisher}.Arn>"),
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
    }
    [(_, url)] = [
        (logical_id, resource["Properties"])
        for logical_id, resource in stack.of_type("AWS::Lambda::Url").items()
        if resource["Properties"]["AuthType"] == "AWS_IAM"
    ]
    assert flatten(url["TargetFunctionArn"]) == f"<{publisher}.Arn>"  # the URL the probe signs for


def test_with_oidc_tokens_there_is_no_probe_and_synth_says_why(oidc):
    assert c.HANDLER_PROBE not in oidc.stack.functions()
    warnings = [
        entry["data"]
        for path in oidc.outdir.glob("*.metadata.json")
        for entries in json.loads(path.read_text()).values()
        for entry in entries
        if entry["type"] == "aws:cdk:warning"
    ]
    assert any(
        "No synthetic probe in prod" in str(warning) and "oidc" in str(warning) for warning in warnings
    )
