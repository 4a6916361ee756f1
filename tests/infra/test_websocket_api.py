"""The WebSocket API in every environment: routes and their authorizer, stage throttling and access logs,
least-privilege grants per function, the scheduled expiry sweeper, the HS256 signing key, environments
and outputs."""

from __future__ import annotations

import json

import pytest

from stacks.config import load
from streaming import constants as c
from tests.infra.templates import Stack, as_list, flatten

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("synth")]

ROUTES = {"$connect", "$disconnect", "$default", "subscribe", "unsubscribe", "ping", "replay"}
PUBLISHERS = (c.HANDLER_PUBLISH_HTTP, c.HANDLER_PUBLISH_EVENTBRIDGE)
DELIVERERS = (c.HANDLER_WEBSOCKET, c.HANDLER_FANOUT_WORKER, *PUBLISHERS)
STORE = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
}
DELIVERY = {"dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:Query"}
# Query the due expiry records, delete them, remove each connection: no writes but deletes.
# and PutItem for the connection stats item, UpdateItem for the expiry records only (asserted below)
SWEEPER = {
    "dynamodb:GetItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
}
# handler -> (actions on the events table, actions on the connections table)
TABLE_ACTIONS = {
    c.HANDLER_PUBLISH_HTTP: (STORE, DELIVERY),
    c.HANDLER_PUBLISH_EVENTBRIDGE: (STORE, DELIVERY),
    c.HANDLER_WEBSOCKET: (
        {"dynamodb:GetItem", "dynamodb:Query"},
        {
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:Query",
        },
    ),
    c.HANDLER_FANOUT_WORKER: ({"dynamodb:GetItem"}, DELIVERY),  # reads the events it is handed by position
    c.HANDLER_WS_AUTHORIZER: (set(), set()),
    c.HANDLER_WS_SWEEPER: (set(), SWEEPER),  # never reads the events table
    c.HANDLER_PROBE: (set(), set()),  # a client of the stack's endpoints, like any subscriber
    # SSE: replay and polling; stream leases per token subject.
    c.SSE_START_SCRIPT: (
        {"dynamodb:GetItem", "dynamodb:Query"},
        {"dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"},
    ),
}
# handler -> the @connections methods it calls (lambdas/streaming/session.py, fanout.py); every other
# function none, and nobody GET.
MANAGE_METHODS = {
    # Deliver only: a 410 removes the connection's records, it is never closed.
    **{handler: ("POST",) for handler in (c.HANDLER_FANOUT_WORKER, *PUBLISHERS)},
    c.HANDLER_WEBSOCKET: ("POST", "DELETE"),  # answers, and closes expired or abusive connections
    c.HANDLER_WS_SWEEPER: ("POST", "DELETE"),  # closes expired connections, notices those about to
}
ACCESS_LOG_VARIABLES = {
    "$context.requestId",
    "$context.connectionId",
    "$context.eventType",
    "$context.routeKey",
    "$context.status",
    "$context.identity.sourceIp",
    "$context.requestTime",
    "$context.error.message",
    "$context.authorizer.principalId",
    "$context.integrationLatency",
}


def test_api_selects_routes_by_the_action_field(stack):
    _, api = stack.one("AWS::ApiGatewayV2::Api")
    assert (api["ProtocolType"], api["RouteSelectionExpression"]) == ("WEBSOCKET", "$request.body.action")


def test_every_route_goes_to_the_route_handler_and_only_connect_is_authorized(stack):
    authorizer_id, _ = stack.one("AWS::ApiGatewayV2::Authorizer")
    integration_id, integration = stack.one("AWS::ApiGatewayV2::Integration")
    routes = {
        route["Properties"]["RouteKey"]: route["Properties"]
        for route in stack.of_type("AWS::ApiGatewayV2::Route").values()
    }
    assert set(routes) == ROUTES and len(stack.of_type("AWS::ApiGatewayV2::Route")) == len(ROUTES)
    assert {"$connect", "$disconnect", "$default", *c.WEBSOCKET_ACTIONS} == ROUTES  # the protocol's list
    for key, route in routes.items():
        assert flatten(route["Target"]) == f"integrations/<{integration_id}>"
        if key == "$connect":
            assert (route["AuthorizationType"], route["AuthorizerId"]) == ("CUSTOM", {"Ref": authorizer_id})
        else:
            assert route["AuthorizationType"] == "NONE" and "AuthorizerId" not in route, key
    route_handler, _ = stack.functions()[c.HANDLER_WEBSOCKET]
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert f"/functions/<{route_handler}.Arn>/invocations" in flatten(integration["IntegrationUri"])


def test_connect_authorizer_is_a_request_authorizer_with_no_identity_source(stack):
    _, authorizer = stack.one("AWS::ApiGatewayV2::Authorizer")
    assert authorizer["AuthorizerType"] == "REQUEST"
    # Any identity source would be required: API Gateway answers 401 without asking the function.
    assert "IdentitySource" not in authorizer
    function, _ = stack.functions()[c.HANDLER_WS_AUTHORIZER]
    assert f"/functions/<{function}.Arn>/invocations" in flatten(authorizer["AuthorizerUri"])


def test_stage_throttles_routes_as_configured_and_deploys_itself(stack, environment):
    _, stage = stack.one("AWS::ApiGatewayV2::Stage")
    limits = load(environment).rate_limits
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": limits.api_rate_per_second,
        "ThrottlingBurstLimit": limits.api_burst,
    }
    assert (stage["StageName"], stage["AutoDeploy"], stage["ApiId"]) == (
        environment,
        True,
        {"Ref": stack.api},
    )


def test_access_logs_are_json_without_query_string_or_headers(stack, environment):
    _, stage = stack.one("AWS::ApiGatewayV2::Stage")
    settings = stage["AccessLogSettings"]
    log_format = settings["Format"]
    fields = json.loads(log_format)  # every $context value is quoted, so the format itself parses
    assert set(fields.values()) == ACCESS_LOG_VARIABLES
    for forbidden in ("querystring", "header", "$context.identity.useragent", "$context.path"):
        assert forbidden not in log_format.lower()
    log_group = settings["DestinationArn"]["Fn::GetAtt"][0]
    assert stack.resources[log_group]["Type"] == "AWS::Logs::LogGroup"
    assert stack.resources[log_group]["Properties"]["RetentionInDays"] == load(environment).log_retention_days


def test_connections_table_keys_match_the_registry_layout(stack):
    connections = stack.resources[stack.table(c.OUTPUT_CONNECTIONS_TABLE)]["Properties"]
    assert connections["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert connections["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ]
    assert connections["BillingMode"] == "PAY_PER_REQUEST"
    assert "GlobalSecondaryIndexes" not in connections  # fan-out queries the base table by type


def test_each_function_may_use_exactly_the_table_operations_it_needs(stack):
    events, connections = stack.table(c.OUTPUT_EVENTS_TABLE), stack.table(c.OUTPUT_CONNECTIONS_TABLE)
    assert set(stack.functions()) == set(TABLE_ACTIONS)
    for handler, (on_events, on_connections) in TABLE_ACTIONS.items():
        dynamodb = {(a, r) for a, r in stack.grants(handler) if a.startswith("dynamodb:")}
        assert dynamodb == {(a, f"<{events}.Arn>") for a in on_events} | {
            (a, f"<{connections}.Arn>") for a in on_connections
        }, handler


def manage_connections(stack: Stack, environment: str, methods: tuple[str, ...]) -> set[tuple[str, str]]:
    return {
        (
            "execute-api:ManageConnections",
            f"arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:<{stack.api}>"
            f"/{environment}/{method}/@connections/*",
        )
        for method in methods
    }


def test_manage_connections_is_limited_to_this_api_stage_and_the_methods_called(stack, environment):
    for handler in stack.functions():
        manage = {grant for grant in stack.grants(handler) if grant[0].startswith("execute-api:")}
        assert manage == manage_connections(stack, environment, MANAGE_METHODS.get(handler, ())), handler


def test_only_publishers_invoke_the_fanout_worker_and_only_the_probe_the_publish_url(stack):
    worker, _ = stack.functions()[c.HANDLER_FANOUT_WORKER]
    publisher, _ = stack.functions()[c.HANDLER_PUBLISH_HTTP]
    expected = {
        **{handler: {("lambda:InvokeFunction", f"<{worker}.Arn>")} for handler in PUBLISHERS},
        c.HANDLER_PROBE: {
            ("lambda:InvokeFunctionUrl", f"<{publisher}.Arn>"),
            ("lambda:InvokeFunction", f"<{publisher}.Arn>"),
        },
    }
    for handler in stack.functions():
        invokes = {grant for grant in stack.grants(handler) if grant[0].startswith("lambda:")}
        assert invokes == expected.get(handler, set()), handler


def test_fanout_worker_is_not_retried(stack):
    worker, _ = stack.functions()[c.HANDLER_FANOUT_WORKER]
    [config] = [
        resource["Properties"]
        for resource in stack.of_type("AWS::Lambda::EventInvokeConfig").values()
        if resource["Properties"]["FunctionName"] == {"Ref": worker}
    ]
    assert config["MaximumRetryAttempts"] == 0


def test_sweeper_runs_every_sweep_interval_without_retry_or_reserved_concurrency(stack):
    sweeper, function = stack.functions()[c.HANDLER_WS_SWEEPER]
    scheduled = {
        logical_id: rule["Properties"]
        for logical_id, rule in stack.of_type("AWS::Events::Rule").items()
        if "ScheduleExpression" in rule["Properties"]
        and {"Fn::GetAtt": [sweeper, "Arn"]} in [target["Arn"] for target in rule["Properties"]["Targets"]]
    }
    [(rule_id, rule)] = scheduled.items()
    assert c.SWEEP_INTERVAL_MINUTES == 1
    assert (rule["ScheduleExpression"], rule["State"]) == ("rate(1 minute)", "ENABLED")
    assert [target["Arn"] for target in rule["Targets"]] == [{"Fn::GetAtt": [sweeper, "Arn"]}]
    [permission] = [
        resource["Properties"]
        for resource in stack.of_type("AWS::Lambda::Permission").values()
        if resource["Properties"]["FunctionName"] == {"Fn::GetAtt": [sweeper, "Arn"]}
    ]
    assert (permission["Principal"], permission["SourceArn"]) == (
        "events.amazonaws.com",
        {"Fn::GetAtt": [rule_id, "Arn"]},
    )
    # Reserving any fails to deploy under a low account quota; overlapping sweeps are idempotent.
    assert "ReservedConcurrentExecutions" not in function
    assert function["Timeout"] == c.SWEEPER_TIMEOUT_SECONDS
    [config] = [
        resource["Properties"]
        for resource in stack.of_type("AWS::Lambda::EventInvokeConfig").values()
        if resource["Properties"]["FunctionName"] == {"Ref": sweeper}
    ]
    assert config["MaximumRetryAttempts"] == 0


def test_sweeper_may_only_delete_connections_close_and_notify_them_and_write_the_stats(stack, environment):
    connections = stack.table(c.OUTPUT_CONNECTIONS_TABLE)
    assert stack.grants(c.HANDLER_WS_SWEEPER) == (
        {(action, f"<{connections}.Arn>") for action in SWEEPER}
        | manage_connections(stack, environment, ("POST", "DELETE"))
        | {("xray:PutTraceSegments", "*"), ("xray:PutTelemetryRecords", "*")}
    )
    env = stack.environment(c.HANDLER_WS_SWEEPER)
    assert c.ENV_FANOUT_FUNCTION not in env and c.ENV_AUTH_MODE not in env
    statements = stack.statements(c.HANDLER_WS_SWEEPER)
    # It writes one item: the connection stats, in their own partition.
    [put] = [s for s in statements if "dynamodb:PutItem" in as_list(s["Action"])]
    assert as_list(put["Action"]) == ["dynamodb:PutItem"]
    assert put["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [c.STATS_PARTITION]}}
    # It updates the expiry records only: a reconnect notice is marked sent there.
    [update] = [s for s in statements if "dynamodb:UpdateItem" in as_list(s["Action"])]
    assert as_list(update["Action"]) == ["dynamodb:UpdateItem"]
    assert update["Condition"] == {
        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [c.EXPIRY_PARTITION]}
    }


def test_hs256_signing_key_is_generated_and_only_the_token_verifiers_and_the_probe_read_it(stack):
    secret_id, secret = stack.one("AWS::SecretsManager::Secret")
    assert secret["GenerateSecretString"] == {"PasswordLength": 64, "ExcludePunctuation": True}
    # $connect and the SSE app verify tokens; the probe signs its own.
    verifiers = (c.HANDLER_WS_AUTHORIZER, c.SSE_START_SCRIPT, c.HANDLER_PROBE)
    for handler in stack.functions():
        secrets = {grant for grant in stack.grants(handler) if grant[0].startswith("secretsmanager:")}
        expected = {("secretsmanager:GetSecretValue", f"<{secret_id}>")}
        assert secrets == (expected if handler in verifiers else set()), handler
        env = stack.environment(handler)
        assert env.get(c.ENV_AUTH_SECRET_ARN) == ({"Ref": secret_id} if handler in verifiers else None), (
            handler
        )
    assert stack.outputs[c.OUTPUT_AUTH_SECRET_ARN]["Value"] == {"Ref": secret_id}


def test_delivering_functions_know_the_callback_url_table_and_worker(stack, environment):
    callback = f"https://<{stack.api}>.execute-api.<AWS::Region>.<AWS::URLSuffix>/{environment}"
    worker, _ = stack.functions()[c.HANDLER_FANOUT_WORKER]
    config = load(environment)
    for handler in (*DELIVERERS, c.HANDLER_WS_SWEEPER):
        env = stack.environment(handler)
        assert flatten(env[c.ENV_MANAGEMENT_URL]) == callback, handler
        assert env[c.ENV_CONNECTIONS_TABLE] == {"Ref": stack.table(c.OUTPUT_CONNECTIONS_TABLE)}
        assert env[c.ENV_FANOUT_CHUNK_CONNECTIONS] == str(config.fanout_chunk_connections)
        assert env[c.ENV_COMPRESS_ABOVE_BYTES] == str(config.compress_above_bytes)
        assert float(env[c.ENV_WS_MESSAGES_PER_SECOND]) == config.rate_limits.websocket_messages_per_second
        assert env[c.ENV_WS_BURST] == str(config.rate_limits.websocket_burst)
        # API Gateway's 2-hour cut less one sweep: the sweep closes a connection before API Gateway does.
        assert env[c.ENV_WS_MAX_CONNECTION_SECONDS] == str(2 * 3600 - 60)
        # Only the publishers hand chunks to the worker: the worker delivers the chunk it was given, the
        # route handler answers one connection at a time and the sweeper delivers nothing.
        assert env.get(c.ENV_FANOUT_FUNCTION) == ({"Ref": worker} if handler in PUBLISHERS else None), handler


def test_authorizer_knows_how_to_verify_and_nothing_about_delivery(stack, environment):
    env = stack.environment(c.HANDLER_WS_AUTHORIZER)
    config = load(environment)
    assert {k: v for k, v in env.items() if k.startswith("AUTH_") and k != c.ENV_AUTH_SECRET_ARN} == {
        c.ENV_AUTH_MODE: "hs256",
        c.ENV_AUTH_AUDIENCE: config.auth.audience,
        c.ENV_AUTH_ISSUER: f"streaming-{environment}",
        c.ENV_AUTH_ROLE_CLAIM: config.auth.role_claim,
    }
    assert json.loads(env[c.ENV_ALLOWED_ORIGINS]) == config.allowed_origins
    assert c.ENV_CONNECTIONS_TABLE not in env and c.ENV_MANAGEMENT_URL not in env


def test_every_function_of_the_service_reads_the_runtime_settings(stack, environment):
    expected = load(environment).runtime_settings("events").to_env()
    for handler in set(stack.functions()) - {c.HANDLER_PROBE}:  # the probe is a client of the service
        env = stack.environment(handler)
        assert env[c.ENV_EVENTS_TABLE] == {"Ref": stack.table(c.OUTPUT_EVENTS_TABLE)}
        assert {k: env[k] for k in expected if k != c.ENV_EVENTS_TABLE} == {
            k: v for k, v in expected.items() if k != c.ENV_EVENTS_TABLE
        }, handler


def test_outputs_name_the_wss_url_and_the_connections_table(stack, environment):
    url = flatten(stack.outputs[c.OUTPUT_WEBSOCKET_URL]["Value"])
    assert url == f"wss://<{stack.api}>.execute-api.<AWS::Region>.<AWS::URLSuffix>/{environment}"
    connections = stack.table(c.OUTPUT_CONNECTIONS_TABLE)
    assert stack.resources[connections]["Type"] == "AWS::DynamoDB::GlobalTable"
    assert connections != stack.table(c.OUTPUT_EVENTS_TABLE)


def test_oidc_needs_no_signing_key(oidc):
    assert oidc.stack.of_type("AWS::SecretsManager::Secret") == {}
    assert c.OUTPUT_AUTH_SECRET_ARN not in oidc.stack.outputs
    env = oidc.stack.environment(c.HANDLER_WS_AUTHORIZER)
    assert (env[c.ENV_AUTH_MODE], env[c.ENV_AUTH_ISSUER], env[c.ENV_AUTH_JWKS_URL]) == (
        "oidc",
        "https://idp.example.com/tenant",
        "https://idp.example.com/tenant/.well-known/jwks.json",
    )
    assert c.ENV_AUTH_SECRET_ARN not in env
    assert not [grant for grant in oidc.stack.grants(c.HANDLER_WS_AUTHORIZER) if "secretsmanager" in grant[0]]


def test_acknowledgements_hold_when_account_and_region_are_known(oidc):
    report = json.loads((oidc.outdir / "validation-report.json").read_text())
    assert report["pluginReports"] == []
    # The @connections ARNs keep pseudo parameters, so the acknowledged finding reads the same everywhere.
    manage = {r for a, r in oidc.stack.grants(c.HANDLER_WEBSOCKET) if a == "execute-api:ManageConnections"}
    assert len(manage) == 2 and all(":<AWS::Region>:<AWS::AccountId>:" in arn for arn in manage)
    sweep = {r for a, r in oidc.stack.grants(c.HANDLER_WS_SWEEPER) if a == "execute-api:ManageConnections"}
    assert len(sweep) == 2 and all(":<AWS::Region>:<AWS::AccountId>:" in arn for arn in sweep)
