"""Least privilege beyond cdk-nag: every function's complete set of (action, resource, condition), listed
in one table and asserted equal, in every environment; and the HS256 key only in Secrets Manager."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from streaming import constants as c
from tests.infra.templates import Stack, as_list, flatten

pytestmark = [pytest.mark.security, pytest.mark.infra, pytest.mark.xdist_group("synth")]

EVENTS = "<EventStoreEvents67C89B68.Arn>"
CONNECTIONS = "<WebSocketApiConnectionsFD21ACAC.Arn>"
UNDELIVERED = "<PublishApiUndeliveredEvents078924AD.Arn>"
WORKER = "<WebSocketApiFanoutWorker8D421F98.Arn>"
PUBLISHER = "<PublishApiHttpPublisher9D7F3B44.Arn>"
SIGNING_KEY = "<WebSocketApiTokenSigningKey289ABABD>"
# X-Ray takes no resource: the only "*" allowed.
XRAY = {("xray:PutTraceSegments", "*", ""), ("xray:PutTelemetryRecords", "*", "")}
BASIC_EXECUTION = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def manage(method: str) -> str:
    """The @connections method on this API's stage; {stage} is filled per environment."""
    api = "arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:<WebSocketApi2C7AF84E>"
    return f"{api}/{{stage}}/{method}/@connections/*"


def on(resource: str, *actions: str, condition: str = "") -> set[tuple[str, str, str]]:
    """DynamoDB actions on a table."""
    return {(f"dynamodb:{action}", resource, condition) for action in actions}


def leading_keys(*keys: str) -> str:
    return json.dumps({"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": list(keys)}}, sort_keys=True)


DELIVER = {("execute-api:ManageConnections", manage("POST"), "")}
CLOSE = {("execute-api:ManageConnections", manage("DELETE"), "")}
INVOKE_WORKER = {("lambda:InvokeFunction", WORKER, "")}
READ_KEY = {("secretsmanager:GetSecretValue", SIGNING_KEY, "")}
PUBLISH = (
    on(EVENTS, "GetItem", "PutItem", "BatchWriteItem", "UpdateItem", "DeleteItem", "Query")
    | on(CONNECTIONS, "GetItem", "DeleteItem", "Query")
    | DELIVER
    | INVOKE_WORKER
)

# handler -> every (action, resource, condition) its role may use, besides the basic execution policy.
INVENTORY: dict[str, set[tuple[str, str, str]]] = {
    c.HANDLER_PUBLISH_HTTP: XRAY | PUBLISH,
    c.HANDLER_PUBLISH_EVENTBRIDGE: XRAY | PUBLISH | {("sqs:SendMessage", UNDELIVERED, "")},
    c.HANDLER_FANOUT_WORKER: XRAY
    | on(EVENTS, "GetItem")
    | on(CONNECTIONS, "GetItem", "DeleteItem", "Query")
    | DELIVER,
    c.HANDLER_WEBSOCKET: XRAY
    | on(EVENTS, "GetItem", "Query")
    | on(CONNECTIONS, "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query")
    | DELIVER
    | CLOSE,
    c.HANDLER_WS_AUTHORIZER: XRAY | READ_KEY,
    c.HANDLER_WS_SWEEPER: XRAY
    | on(CONNECTIONS, "GetItem", "DeleteItem", "Query")
    | on(CONNECTIONS, "PutItem", condition=leading_keys("stats"))
    | on(CONNECTIONS, "UpdateItem", condition=leading_keys("expiry"))
    | DELIVER
    | CLOSE,
    c.HANDLER_PROBE: XRAY
    | READ_KEY
    | {("lambda:InvokeFunctionUrl", PUBLISHER, ""), ("lambda:InvokeFunction", PUBLISHER, "")},
    c.SSE_START_SCRIPT: XRAY
    | on(EVENTS, "GetItem", "Query")
    | on(CONNECTIONS, "Query", "PutItem", "DeleteItem")
    | READ_KEY,
}


def allowed(stack: Stack, handler: str) -> set[tuple[str, str, str]]:
    """(action, resource, condition) for every statement of the handler's role, conditions kept."""
    found = set()
    for statement in stack.statements(handler):
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Action", "Effect", "Resource", "Condition"}  # no NotAction, no Principal
        condition = json.dumps(statement["Condition"], sort_keys=True) if "Condition" in statement else ""
        for action in as_list(statement["Action"]):
            for resource in as_list(statement["Resource"]):
                found.add((action, flatten(resource), condition))
    return found


def test_every_function_is_in_the_inventory(stack):
    assert set(stack.functions()) == set(INVENTORY)


@pytest.mark.parametrize("handler", sorted(INVENTORY))
def test_each_function_may_do_exactly_what_the_inventory_lists(stack, environment, handler):
    expected = {(action, where.format(stage=environment), cond) for action, where, cond in INVENTORY[handler]}
    assert allowed(stack, handler) == expected


def test_roles_are_for_lambda_with_only_the_basic_execution_policy(stack):
    """Logs come from the AWS managed basic execution policy (CreateLogGroup, CreateLogStream, PutLogEvents),
    and nothing else is attached to a role but its own inline policy."""
    roles = stack.of_type("AWS::IAM::Role")
    assert {fn["Role"]["Fn::GetAtt"][0] for _, fn in stack.functions().values()} == set(roles)
    for logical_id, role in roles.items():
        properties = role["Properties"]
        assert [flatten(arn) for arn in properties["ManagedPolicyArns"]] == [BASIC_EXECUTION], logical_id
        [trust] = properties["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "lambda.amazonaws.com"} and "Policies" not in properties
    for policy in stack.of_type("AWS::IAM::Policy").values():
        assert len(policy["Properties"]["Roles"]) == 1  # no policy shared between functions


def test_no_wildcard_action_no_pass_role_and_no_star_resource_but_x_ray(stack):
    for handler in INVENTORY:
        for action, resource, _ in allowed(stack, handler):
            assert "*" not in action and action != "iam:PassRole", (handler, action)
            assert resource != "*" or action.startswith("xray:"), (handler, action)
    assert not stack.of_type("AWS::IAM::ManagedPolicy") and not stack.of_type("AWS::IAM::User")


def test_the_signing_key_is_generated_in_secrets_manager_never_written_in_the_template(stack, synthesized):
    [(_, secret)] = stack.of_type("AWS::SecretsManager::Secret").items()
    assert "SecretString" not in secret["Properties"] and "GenerateSecretString" in secret["Properties"]
    for handler, (_, function) in stack.functions().items():
        variables = function.get("Environment", {}).get("Variables", {})
        for name, value in variables.items():
            if "SECRET" in name or "KEY" in name:
                assert name == "AUTH_SECRET_ARN" and flatten(value) == SIGNING_KEY, (handler, name)
        if INVENTORY[handler] >= READ_KEY:
            assert flatten(variables["AUTH_SECRET_ARN"]) == SIGNING_KEY  # read at run time, by ARN


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_no_template_holds_key_material(synthesized, environment):
    """No literal that could be a key: no PEM block, no long base64-like literal but asset hashes,
    logical ids (CDK suffixes them with eight upper-case hex digits) and the names of SSM parameters."""
    template = synthesized.template(environment)
    long_words = {word for word in strings(template) if re.fullmatch(r"[A-Za-z0-9+/=]{32,}", word)}
    suspicious = {
        word
        for word in long_words
        if re.search(r"[0-9]", word)  # a generated key mixes digits in; names of properties do not
        and not re.fullmatch(r"[0-9a-f]{64}(\.zip|\.json)?", word)
        and not re.search(r"[0-9A-F]{8}$", word)
        and word not in template.get("Parameters", {})
    }
    assert suspicious == set()
    assert not [word for word in strings(template) if "PRIVATE KEY" in word or word.startswith("eyJ")]
