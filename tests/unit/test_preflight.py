"""make preflight against stubbed AWS answers (botocore's Stubber): a clean account passes, and each
blocker alone fails the run with a message that says what to do."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass, replace

import boto3
import pytest
from botocore.stub import Stubber

from stacks import public_layers
from stacks.config import EnvironmentConfig, load
from tools.preflight import Clients, Finding, preflight, render

REGION = "eu-west-1"
ACCOUNT = "123456789012"
POWERTOOLS_ARN = f"arn:aws:lambda:{REGION}:017000801446:layer:AWSLambdaPowertoolsPythonV3-python313-arm64:40"


@dataclass(frozen=True)
class Account:
    """What the account answers; the defaults are an account ready for a first deploy."""

    quota: int = 1000
    unreserved: int = 1000
    deployed_reservations: tuple[int, ...] | None = None  # the stack's functions', once it is deployed
    web_adapter_layer: bool = True
    powertools_parameter: bool = True
    cloudwatch_role: str | None = f"arn:aws:iam::{ACCOUNT}:role/apigateway-cloudwatch-logs"
    bootstrap_version: int | None = 29
    api_gateway_readable: bool = True


CLEAN = Account()


def not_found(stubber: Stubber, method: str, code: str, message: str, params: dict) -> None:
    stubber.add_client_error(method, service_error_code=code, service_message=message, expected_params=params)


class StubbedAccount:
    """Clients whose every answer is queued, in the order preflight asks, from an `Account`."""

    def __init__(self, account: Account, config: EnvironmentConfig, region: str = REGION) -> None:
        def client(service: str):
            return boto3.client(
                service, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing"
            )

        self.clients = Clients(
            sts=client("sts"),
            lambda_=client("lambda"),
            ssm=client("ssm"),
            apigateway=client("apigateway"),
            cloudformation=client("cloudformation"),
        )
        self.stubbers = {name: Stubber(getattr(self.clients, name)) for name in Clients.__dataclass_fields__}
        self._queue(account, config, region)

    def _queue(self, account: Account, config: EnvironmentConfig, region: str) -> None:
        sts, lambda_, ssm = self.stubbers["sts"], self.stubbers["lambda_"], self.stubbers["ssm"]
        apigateway, cloudformation = self.stubbers["apigateway"], self.stubbers["cloudformation"]
        sts.add_response(
            "get_caller_identity",
            {"Account": ACCOUNT, "UserId": "AIDAEXAMPLE", "Arn": f"arn:aws:iam::{ACCOUNT}:user/deployer"},
        )
        lambda_.add_response(
            "get_account_settings",
            {
                "AccountLimit": {
                    "ConcurrentExecutions": account.quota,
                    "UnreservedConcurrentExecutions": account.unreserved,
                }
            },
        )
        stack = {"StackName": config.stack_name}
        if account.deployed_reservations is None:
            message = f"Stack with id {config.stack_name} does not exist"
            not_found(cloudformation, "list_stack_resources", "ValidationError", message, stack)
        else:
            names = [f"{config.stack_name}-Function{i}" for i in range(len(account.deployed_reservations))]
            summaries = [
                {
                    "LogicalResourceId": f"Function{i}",
                    "PhysicalResourceId": name,
                    "ResourceType": "AWS::Lambda::Function",
                    "LastUpdatedTimestamp": datetime.datetime(2026, 1, 1),
                    "ResourceStatus": "UPDATE_COMPLETE",
                }
                for i, name in enumerate(names)
            ]
            cloudformation.add_response("list_stack_resources", {"StackResourceSummaries": summaries}, stack)
            for name, reserved in zip(names, account.deployed_reservations, strict=True):
                lambda_.add_response(
                    "get_function_concurrency",
                    {"ReservedConcurrentExecutions": reserved},
                    {"FunctionName": name},
                )
        adapter = public_layers.web_adapter_layer_arn(
            config.web_adapter_layer_version, partition="aws", region=region
        )
        self._layer(adapter, exists=account.web_adapter_layer)
        parameter = public_layers.powertools_parameter(config.powertools_version)
        if account.powertools_parameter:
            ssm.add_response(
                "get_parameter",
                {"Parameter": {"Name": parameter, "Type": "String", "Value": POWERTOOLS_ARN}},
                {"Name": parameter},
            )
            self._layer(POWERTOOLS_ARN, exists=True)
        else:
            not_found(ssm, "get_parameter", "ParameterNotFound", "", {"Name": parameter})
        if not account.api_gateway_readable:
            not_found(apigateway, "get_account", "AccessDeniedException", "not authorized", {})
        elif account.cloudwatch_role is None:
            apigateway.add_response(
                "get_account", {"throttleSettings": {"burstLimit": 5000, "rateLimit": 10000.0}}
            )
        else:
            apigateway.add_response("get_account", {"cloudwatchRoleArn": account.cloudwatch_role})
        toolkit = {"StackName": "CDKToolkit"}
        if account.bootstrap_version is None:
            not_found(
                cloudformation,
                "describe_stacks",
                "ValidationError",
                "Stack with id CDKToolkit does not exist",
                toolkit,
            )
        else:
            outputs = [{"OutputKey": "BootstrapVersion", "OutputValue": str(account.bootstrap_version)}]
            bootstrap = {
                "StackName": "CDKToolkit",
                "CreationTime": datetime.datetime(2025, 1, 1),
                "StackStatus": "UPDATE_COMPLETE",
                "Outputs": outputs,
            }
            cloudformation.add_response("describe_stacks", {"Stacks": [bootstrap]}, toolkit)

    def _layer(self, arn: str, *, exists: bool) -> None:
        if exists:
            self.stubbers["lambda_"].add_response(
                "get_layer_version_by_arn",
                {"LayerVersionArn": arn, "Version": int(arn.rsplit(":", 1)[1])},
                {"Arn": arn},
            )
        else:
            message = "The resource you requested does not exist."
            not_found(
                self.stubbers["lambda_"],
                "get_layer_version_by_arn",
                "ResourceNotFoundException",
                message,
                {"Arn": arn},
            )

    def __enter__(self) -> Clients:
        for stubber in self.stubbers.values():
            stubber.activate()
        return self.clients

    def __exit__(self, *_: object) -> None:
        for stubber in self.stubbers.values():
            stubber.deactivate()

    def assert_every_answer_was_asked_for(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


def run(account: Account, environment: str = "prod", region: str = REGION) -> tuple[list[Finding], int]:
    config = load(environment)
    stubbed = StubbedAccount(account, config, region)
    with stubbed as clients:
        findings = preflight(config, region, clients)
    if findings[0].level == "ok":
        stubbed.assert_every_answer_was_asked_for()
    return findings, render("title", findings)[1]


@pytest.fixture(autouse=True)
def _no_region_from_the_environment(monkeypatch) -> Iterator[None]:
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)
    yield


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_a_clean_account_passes_every_check(environment):
    findings, status = run(CLEAN, environment)
    assert status == 0
    assert [(f.check, f.level) for f in findings] == [
        ("region", "ok"),
        ("account", "ok"),
        ("concurrency", "ok"),
        ("web adapter layer", "ok"),
        ("powertools layer", "ok"),
        ("api gateway logging", "ok"),
        ("cdk bootstrap", "ok"),
    ]


@pytest.mark.parametrize(
    ("account", "check", "says"),
    [
        # prod reserves 50 + 100 and Lambda keeps 100 unreserved: 250 needed
        pytest.param(
            replace(CLEAN, quota=200, unreserved=200),
            "concurrency",
            ["needs 250 available", "has 200", "quota"],
            id="concurrency",
        ),
        pytest.param(
            replace(CLEAN, web_adapter_layer=False),
            "web adapter layer",
            ["LambdaAdapterLayerArm64:27", "does not exist"],
            id="web-adapter-layer",
        ),
        pytest.param(
            replace(CLEAN, powertools_parameter=False),
            "powertools layer",
            ["Powertools 3.37.0", "constraints.txt"],
            id="powertools-layer",
        ),
        pytest.param(
            replace(CLEAN, cloudwatch_role=None),
            "api gateway logging",
            ["no CloudWatch Logs role", REGION],
            id="api-gateway-role",
        ),
        pytest.param(
            replace(CLEAN, bootstrap_version=None),
            "cdk bootstrap",
            [f"npx cdk bootstrap aws://{ACCOUNT}/{REGION}"],
            id="not-bootstrapped",
        ),
        pytest.param(
            replace(CLEAN, bootstrap_version=5),
            "cdk bootstrap",
            ["version 5", "6 or newer"],
            id="old-bootstrap",
        ),
    ],
)
def test_each_blocker_alone_fails_the_run_saying_what_to_do(account, check, says):
    findings, status = run(account)
    assert status == 1
    [blocker] = [f for f in findings if f.level != "ok"]
    assert (blocker.check, blocker.level) == (check, "BLOCKER")
    for words in says:
        assert words in blocker.message


def test_an_update_counts_what_the_deployed_stack_already_reserves_as_available():
    # 100 unreserved now, 150 held by the deployed prod functions: after the update 100 stay unreserved.
    findings, status = run(replace(CLEAN, quota=250, unreserved=100, deployed_reservations=(50, 100, 0)))
    assert status == 0, findings
    findings, status = run(replace(CLEAN, quota=250, unreserved=100))
    assert status == 1


def test_a_quota_below_the_stated_one_is_a_warning_where_nothing_is_reserved():
    findings, status = run(replace(CLEAN, quota=10, unreserved=10), environment="dev")
    assert status == 0
    [warning] = [f for f in findings if f.level != "ok"]
    assert (warning.check, warning.level) == ("concurrency", "warning")
    assert "below concurrency_quota 1000" in warning.message


@pytest.mark.parametrize(
    ("region", "says"),
    [("eu-central-2", "does not offer Lambda Function URLs"), ("cn-north-1", "aws-cn partition")],
)
def test_a_region_these_stacks_cannot_use_blocks_before_any_call(region, says):
    findings, status = run(CLEAN, region=region)
    assert status == 1
    [blocker] = findings
    assert blocker.level == "BLOCKER"
    assert region in blocker.message and says in blocker.message


def test_a_call_the_credentials_may_not_make_is_a_warning_not_a_blocker():
    findings, status = run(replace(CLEAN, api_gateway_readable=False))
    assert status == 0
    [warning] = [f for f in findings if f.level != "ok"]
    assert (warning.check, warning.level) == ("api gateway logging", "warning")
    assert "AccessDeniedException" in warning.message


def test_the_report_has_one_line_per_check_and_says_whether_anything_blocks():
    findings, _ = run(replace(CLEAN, cloudwatch_role=None))
    text, status = render("Preflight for Streaming-prod", findings)
    assert status == 1
    lines = text.splitlines()
    assert lines[0] == "Preflight for Streaming-prod"
    assert len(lines) == len(findings) + 2
    assert lines[-1].startswith("1 blocker")
    assert any(line.split()[:2] == ["BLOCKER", "api"] for line in lines)
