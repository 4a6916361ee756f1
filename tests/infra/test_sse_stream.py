"""SSE over Lambda response streaming in every environment: the function the Lambda Web Adapter runs
(start script, layer, environment, limits from config), its public streaming Function URL with CORS,
read-only grants, and the SseUrl output."""

from __future__ import annotations

import json

import pytest

from stacks.config import load
from stacks.constructs.sse_stream import READINESS_CHECK_PATH
from streaming import constants as c
from tests.infra.templates import Stack, as_list, flatten

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("synth")]

ADAPTER_ENVIRONMENT = {
    "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
    "AWS_LWA_INVOKE_MODE": "response_stream",
    "AWS_LWA_PORT": "8080",
    "PORT": "8080",
    "AWS_LWA_READINESS_CHECK_PATH": "/healthz",
}
BASIC_EXECUTION_ROLE = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
XRAY = {("xray:PutTraceSegments", "*"), ("xray:PutTelemetryRecords", "*")}


def sse_function(stack: Stack) -> tuple[str, dict]:
    return stack.functions()[c.SSE_START_SCRIPT]


def sse_url(stack: Stack) -> tuple[str, dict]:
    function, _ = sse_function(stack)
    [(logical_id, url)] = [
        (logical_id, resource["Properties"])
        for logical_id, resource in stack.of_type("AWS::Lambda::Url").items()
        if resource["Properties"]["TargetFunctionArn"] == {"Fn::GetAtt": [function, "Arn"]}
    ]
    return logical_id, url


def test_the_handler_is_the_start_script_the_adapter_runs(stack):
    _, function = sse_function(stack)
    assert function["Handler"] == c.SSE_START_SCRIPT == "sse/run.sh"
    assert (function["Runtime"], function["Architectures"]) == ("python3.13", ["arm64"])
    assert c.SSE_PORT == 8080 and READINESS_CHECK_PATH == "/healthz"


def test_timeout_memory_and_reserved_concurrency_come_from_config(stack, environment):
    _, function = sse_function(stack)
    sse = load(environment).sse
    assert (function["Timeout"], function["MemorySize"]) == (sse.timeout_seconds, sse.memory_mb)
    assert function.get("ReservedConcurrentExecutions") == sse.reserved_concurrency
    assert sse.max_stream_seconds <= function["Timeout"] - 30  # the stream ends itself first
    assert {"dev": None, "staging": None, "prod": 100}[environment] == sse.reserved_concurrency


def test_the_web_adapter_layer_is_the_public_arm64_one_at_the_configured_version(stack, environment):
    _, function = sse_function(stack)
    powertools, adapter = function["Layers"]
    config = load(environment)
    assert flatten(adapter) == (
        "arn:<AWS::Partition>:lambda:<AWS::Region>:753240598075:layer:"
        f"LambdaAdapterLayerArm64:{config.web_adapter_layer_version}"
    )
    # v1.0.0's layer: the newest the adapter's own release docs name (aws/aws-lambda-web-adapter,
    # docs/guide/src/getting-started/zip-packages.md); make preflight checks it exists in the region.
    assert config.web_adapter_layer_version == 27
    assert "Ref" in powertools  # the Powertools parameter (test_stacks.py)


def test_environment_starts_the_adapter_and_configures_the_app(stack, environment):
    _, function = sse_function(stack)
    env = function["Environment"]["Variables"]
    config = load(environment)
    secret_id, _ = stack.one("AWS::SecretsManager::Secret")
    runtime = config.runtime_settings("events").to_env()
    auth = config.auth_settings("secret").to_env()
    sse = config.sse_settings("connections", "wss://api").to_env()
    # Nothing but the adapter's variables and the app's settings; of the WebSocket API only the table
    # where open streams are counted, and its URL, which streams relay from (sse.push).
    assert set(env) == set(ADAPTER_ENVIRONMENT) | set(runtime) | set(auth) | set(sse)
    assert {k: env[k] for k in ADAPTER_ENVIRONMENT} == ADAPTER_ENVIRONMENT
    deployed = (c.ENV_CONNECTIONS_TABLE, c.ENV_SSE_PUSH_URL)
    assert {k: env[k] for k in sse if k not in deployed} == {
        k: v for k, v in sse.items() if k not in deployed
    }
    assert env[c.ENV_CONNECTIONS_TABLE] == {"Ref": stack.table(c.OUTPUT_CONNECTIONS_TABLE)}
    stage_url = json.dumps(env[c.ENV_SSE_PUSH_URL])
    assert stage_url.startswith('{"Fn::Join"') and "wss://" in stage_url and "WebSocketApi" in stage_url
    assert env[c.ENV_SSE_MAX_STREAMS_PER_SUBJECT] == str(config.sse.max_streams_per_subject)
    assert sse[c.ENV_SSE_MAX_STREAM_SECONDS] == str(config.sse.max_stream_seconds)
    assert sse[c.ENV_COMPRESS_ABOVE_BYTES] == str(config.compress_above_bytes)
    assert {k: env[k] for k in auth if k != c.ENV_AUTH_SECRET_ARN} == {
        k: v for k, v in auth.items() if k != c.ENV_AUTH_SECRET_ARN
    }
    assert (env[c.ENV_AUTH_MODE], env[c.ENV_AUTH_ISSUER]) == ("hs256", f"streaming-{environment}")
    assert json.loads(env[c.ENV_ALLOWED_ORIGINS]) == config.allowed_origins
    assert env[c.ENV_AUTH_SECRET_ARN] == {"Ref": secret_id}
    assert env[c.ENV_EVENTS_TABLE] == {"Ref": stack.table(c.OUTPUT_EVENTS_TABLE)}
    assert {k: env[k] for k in runtime if k != c.ENV_EVENTS_TABLE} == {
        k: v for k, v in runtime.items() if k != c.ENV_EVENTS_TABLE
    }
    for websocket_only in (c.ENV_MANAGEMENT_URL, c.ENV_FANOUT_FUNCTION):
        assert websocket_only not in env


def test_function_url_is_public_and_streams(stack):
    _, url = sse_url(stack)
    # NONE: the app verifies the token (Bearer header or ?token=) and the Origin itself.
    assert (url["AuthType"], url["InvokeMode"]) == ("NONE", "RESPONSE_STREAM")


def test_cors_allows_the_configured_origins_to_get_with_the_sse_headers_and_exposes_nothing(
    stack, environment
):
    _, url = sse_url(stack)
    # Exactly these keys: no ExposeHeaders, no AllowCredentials (tokens travel in a header or the query,
    # never in cookies). The Function URL answers preflight (OPTIONS) requests from this configuration
    # itself; CloudFormation's AllowMethods cannot name OPTIONS.
    assert url["Cors"] == {
        "AllowOrigins": load(environment).allowed_origins,
        "AllowMethods": ["GET"],
        "AllowHeaders": ["Authorization", "Last-Event-ID", "Content-Type", "Cache-Control"],
        "MaxAge": 600,
    }
    # ... and it is the one definition the local stack serves too (local/lambda_runtime.py).
    cors = load(environment).sse_cors()
    assert (cors.allowed_origins, cors.allowed_methods, cors.allowed_headers, cors.max_age_seconds) == (
        tuple(url["Cors"]["AllowOrigins"]),
        tuple(url["Cors"]["AllowMethods"]),
        tuple(url["Cors"]["AllowHeaders"]),
        url["Cors"]["MaxAge"],
    )


def test_anyone_may_call_the_url_but_nobody_may_invoke_the_function_directly(stack):
    function, _ = sse_function(stack)
    permissions = sorted(
        (
            resource["Properties"]
            for resource in stack.of_type("AWS::Lambda::Permission").values()
            if resource["Properties"]["FunctionName"] == {"Fn::GetAtt": [function, "Arn"]}
        ),
        key=lambda permission: permission["Action"],
    )
    # Since October 2025 a Function URL needs both actions granted; InvokeFunction only through the URL.
    assert permissions == [
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Fn::GetAtt": [function, "Arn"]},
            "InvokedViaFunctionUrl": True,
            "Principal": "*",
        },
        {
            "Action": "lambda:InvokeFunctionUrl",
            "FunctionName": {"Fn::GetAtt": [function, "Arn"]},
            "FunctionUrlAuthType": "NONE",
            "Principal": "*",
        },
    ]


def test_the_function_may_only_read_events_the_signing_key_and_its_stream_leases(stack):
    secret_id, _ = stack.one("AWS::SecretsManager::Secret")
    events = stack.table(c.OUTPUT_EVENTS_TABLE)
    connections = stack.table(c.OUTPUT_CONNECTIONS_TABLE)
    assert stack.grants(c.SSE_START_SCRIPT) == {
        ("dynamodb:GetItem", f"<{events}.Arn>"),
        ("dynamodb:Query", f"<{events}.Arn>"),
        ("dynamodb:Query", f"<{connections}.Arn>"),
        ("dynamodb:PutItem", f"<{connections}.Arn>"),
        ("dynamodb:DeleteItem", f"<{connections}.Arn>"),
        ("secretsmanager:GetSecretValue", f"<{secret_id}>"),
        *XRAY,
    }
    _, function = sse_function(stack)
    role = stack.resources[function["Role"]["Fn::GetAtt"][0]]["Properties"]
    assert [flatten(arn) for arn in role["ManagedPolicyArns"]] == [BASIC_EXECUTION_ROLE]
    assert "Policies" not in role
    # No inline policy anywhere else names the role either.
    role_id = function["Role"]["Fn::GetAtt"][0]
    naming = [
        policy
        for policy in stack.of_type("AWS::IAM::Policy").values()
        if {"Ref": role_id} in as_list(policy["Properties"]["Roles"])
    ]
    assert len(naming) == 1


def test_logs_are_kept_as_configured(stack, environment):
    _, function = sse_function(stack)
    log_group = function["LoggingConfig"]["LogGroup"]["Ref"]
    assert stack.resources[log_group]["Properties"]["RetentionInDays"] == load(environment).log_retention_days
    assert function["LoggingConfig"]["LogFormat"] == "JSON"


def test_sse_url_is_an_output(stack):
    url_id, _ = sse_url(stack)
    assert stack.outputs[c.OUTPUT_SSE_URL]["Value"] == {"Fn::GetAtt": [url_id, "FunctionUrl"]}
    assert c.OUTPUT_SSE_URL == "SseUrl"


def test_the_publish_url_still_requires_iam(stack):
    urls = {url["Properties"]["AuthType"] for url in stack.of_type("AWS::Lambda::Url").values()}
    assert sorted(urls) == ["AWS_IAM", "NONE"]  # publish and SSE; only SSE is public


def test_oidc_sse_verifies_with_the_jwks_and_reads_no_secret(oidc):
    env = oidc.stack.environment(c.SSE_START_SCRIPT)
    assert (env[c.ENV_AUTH_MODE], env[c.ENV_AUTH_JWKS_URL]) == (
        "oidc",
        "https://idp.example.com/tenant/.well-known/jwks.json",
    )
    assert c.ENV_AUTH_SECRET_ARN not in env
    events = oidc.stack.table(c.OUTPUT_EVENTS_TABLE)
    connections = oidc.stack.table(c.OUTPUT_CONNECTIONS_TABLE)
    assert oidc.stack.grants(c.SSE_START_SCRIPT) == {
        ("dynamodb:GetItem", f"<{events}.Arn>"),
        ("dynamodb:Query", f"<{events}.Arn>"),
        ("dynamodb:Query", f"<{connections}.Arn>"),
        ("dynamodb:PutItem", f"<{connections}.Arn>"),
        ("dynamodb:DeleteItem", f"<{connections}.Arn>"),
        *XRAY,
    }
    # Account and region known: the layer ARN keeps the pseudo parameters either way.
    _, function = sse_function(oidc.stack)
    assert flatten(function["Layers"][1]).startswith(
        "arn:<AWS::Partition>:lambda:<AWS::Region>:753240598075:"
    )
