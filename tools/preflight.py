"""What a deploy of one environment needs from the account and region, checked before `cdk deploy`
with read-only calls and your credentials: one line per check, and a non-zero exit on any blocker.

.venv/bin/python -m tools.preflight --env prod      # make preflight ENV=prod (make deploy runs it first)

The region is the environment's `region` in cdk.json, else AWS_REGION, else your AWS profile's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from stacks import public_layers
from stacks.config import (
    ENVIRONMENTS,
    MIN_UNRESERVED_CONCURRENCY,
    EnvironmentConfig,
    load,
    partition_of,
    region_problem,
)

# The oldest bootstrap stack the synthesized templates accept (their CheckBootstrapVersion rule;
# tests/infra/test_stacks.py keeps the two the same).
MIN_BOOTSTRAP_VERSION = 6
BOOTSTRAP_STACK = "CDKToolkit"
Level = Literal["ok", "warning", "BLOCKER"]


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str


@dataclass(frozen=True)
class Clients:
    """The AWS clients the checks read with, all in the target region (tests pass stubbed ones)."""

    sts: Any
    lambda_: Any
    ssm: Any
    apigateway: Any
    cloudformation: Any

    @classmethod
    def in_region(cls, session: boto3.Session, region: str) -> Clients:
        def client(service: str) -> Any:
            return session.client(service, region_name=region)

        return cls(
            sts=client("sts"),
            lambda_=client("lambda"),
            ssm=client("ssm"),
            apigateway=client("apigateway"),
            cloudformation=client("cloudformation"),
        )


def check_region(region: str) -> Finding:
    problem = region_problem(region)
    if problem:
        return Finding("region", "BLOCKER", problem)
    return Finding("region", "ok", f"{region} offers Function URLs and response streaming")


def check_account(config: EnvironmentConfig, account: str) -> Finding:
    if config.account is not None and config.account != account:
        return Finding(
            "account",
            "BLOCKER",
            f"the credentials are for account {account}, cdk.json deploys {config.name} to {config.account}: "
            "use that account's profile",
        )
    return Finding("account", "ok", account)


def check_concurrency(config: EnvironmentConfig, clients: Clients) -> Finding:
    """Lambda refuses a reservation that leaves fewer than 100 executions unreserved, and the stack rolls
    back. An update releases what the deployed stack's functions hold, so that counts as available."""
    limits = clients.lambda_.get_account_settings()["AccountLimit"]
    quota, unreserved = limits["ConcurrentExecutions"], limits["UnreservedConcurrentExecutions"]
    available = unreserved + concurrency_held_by(config.stack_name, clients)
    needed = config.concurrency_needed
    if available < needed:
        return Finding(
            "concurrency",
            "BLOCKER",
            f"{config.name} reserves {config.describe_reservations()} concurrent executions; with the "
            f"{MIN_UNRESERVED_CONCURRENCY} Lambda keeps unreserved it needs {needed} available, the account "
            f"has {available} (quota {quota}): request a higher 'Concurrent executions' quota (Service "
            "Quotas, AWS Lambda) or lower the reservations in cdk.json",
        )
    summary = f"quota {quota}, {available} available; {config.name} needs {needed or 'no reservations'}"
    if quota < config.concurrency_quota:
        return Finding(
            "concurrency",
            "warning",
            f"{summary}, but the quota is below concurrency_quota {config.concurrency_quota} in cdk.json: "
            "a few busy functions can throttle the rest (new accounts start low; request an increase)",
        )
    return Finding("concurrency", "ok", summary)


def concurrency_held_by(stack_name: str, clients: Clients) -> int:
    """The reserved concurrency of the functions of the stack as deployed (0 before its first deploy)."""
    try:
        pages = clients.cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name)
        functions = [
            resource["PhysicalResourceId"]
            for page in pages
            for resource in page["StackResourceSummaries"]
            if resource["ResourceType"] == "AWS::Lambda::Function"
        ]
    except ClientError as error:
        if _stack_missing(error):
            return 0
        raise
    return sum(
        clients.lambda_.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions", 0)
        for name in functions
    )


def check_web_adapter_layer(config: EnvironmentConfig, region: str, clients: Clients) -> Finding:
    arn = public_layers.web_adapter_layer_arn(
        config.web_adapter_layer_version, partition=partition_of(region), region=region
    )
    if not _layer_exists(clients, arn):
        return Finding(
            "web adapter layer",
            "BLOCKER",
            f"{arn} does not exist: set web_adapter_layer_version in cdk.json to a published version "
            "(github.com/aws/aws-lambda-web-adapter, 'Zip Packages')",
        )
    return Finding("web adapter layer", "ok", arn)


def check_powertools_layer(config: EnvironmentConfig, region: str, clients: Clients) -> Finding:
    parameter = public_layers.powertools_parameter(config.powertools_version)
    try:
        arn = clients.ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ParameterNotFound":
            raise
        return Finding(
            "powertools layer",
            "BLOCKER",
            f"Powertools {config.powertools_version} has no public layer in {region} (no parameter "
            f"{parameter}): pin a release that has one, as powertools_version in cdk.json and "
            "aws-lambda-powertools in constraints.txt",
        )
    if not _layer_exists(clients, arn):
        return Finding("powertools layer", "BLOCKER", f"{parameter} names {arn}, which does not exist")
    return Finding("powertools layer", "ok", f"{config.powertools_version}: {arn}")


def check_api_gateway_logging(region: str, clients: Clients) -> Finding:
    """The WebSocket stage always writes an access log, through API Gateway's account-wide role."""
    role = clients.apigateway.get_account().get("cloudwatchRoleArn")
    if not role:
        return Finding(
            "api gateway logging",
            "BLOCKER",
            f"API Gateway has no CloudWatch Logs role in {region}, which the WebSocket stage's access log "
            "needs: create one and set it (README, 'First deploy into a new account')",
        )
    return Finding("api gateway logging", "ok", role)


def check_bootstrap(account: str, region: str, clients: Clients) -> Finding:
    bootstrap = f"npx cdk bootstrap aws://{account}/{region}"
    try:
        [stack] = clients.cloudformation.describe_stacks(StackName=BOOTSTRAP_STACK)["Stacks"]
    except ClientError as error:
        if not _stack_missing(error):
            raise
        return Finding(
            "cdk bootstrap", "BLOCKER", f"no {BOOTSTRAP_STACK} stack in {region}: run `{bootstrap}`"
        )
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    version = int(outputs.get("BootstrapVersion", 0))
    if version < MIN_BOOTSTRAP_VERSION:
        return Finding(
            "cdk bootstrap",
            "BLOCKER",
            f"{BOOTSTRAP_STACK} is at version {version}, these stacks need {MIN_BOOTSTRAP_VERSION} or newer: "
            f"run `{bootstrap}`",
        )
    return Finding("cdk bootstrap", "ok", f"{BOOTSTRAP_STACK} version {version}")


def preflight(config: EnvironmentConfig, region: str, clients: Clients) -> list[Finding]:
    """Every check; a region these stacks cannot use ends them (its layers and services are moot)."""
    findings = [check_region(region)]
    if findings[0].level == "BLOCKER":
        return findings
    try:
        account = clients.sts.get_caller_identity()["Account"]
    except (ClientError, BotoCoreError) as error:
        return [*findings, Finding("credentials", "BLOCKER", f"cannot tell whose they are: {error}")]
    findings.append(check_account(config, account))
    _checked(findings, "concurrency", lambda: check_concurrency(config, clients))
    _checked(findings, "web adapter layer", lambda: check_web_adapter_layer(config, region, clients))
    _checked(findings, "powertools layer", lambda: check_powertools_layer(config, region, clients))
    _checked(findings, "api gateway logging", lambda: check_api_gateway_logging(region, clients))
    _checked(findings, "cdk bootstrap", lambda: check_bootstrap(account, region, clients))
    return findings


def _checked(findings: list[Finding], check: str, run: Callable[[], Finding]) -> None:
    """A call the credentials may not make is a warning, not a blocker: the deploy role may make it."""
    try:
        findings.append(run())
    except (ClientError, BotoCoreError) as error:
        findings.append(Finding(check, "warning", f"could not check: {error}"))


def _layer_exists(clients: Clients, arn: str) -> bool:
    try:
        clients.lambda_.get_layer_version_by_arn(Arn=arn)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return False
        raise
    return True


def _stack_missing(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ValidationError" and "does not exist" in str(error)


def render(title: str, findings: Iterable[Finding]) -> tuple[str, int]:
    """The report and the exit status: 1 when anything blocks the deploy."""
    findings = list(findings)
    lines = [title] + [f"  {f.level:<8} {f.check:<20} {f.message}" for f in findings]
    blockers = sum(f.level == "BLOCKER" for f in findings)
    lines.append(
        f"{blockers} blocker(s): fix them before deploying." if blockers else "Nothing blocks the deploy."
    )
    return "\n".join(lines), 1 if blockers else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=ENVIRONMENTS, required=True)
    args = parser.parse_args(argv)
    title = f"Preflight for Streaming-{args.env}"
    try:
        config = load(args.env)
    except ValidationError as error:
        text, status = render(title, [Finding("configuration", "BLOCKER", str(error))])
        print(text)
        return status
    session = boto3.Session()
    # The CDK CLI's order: AWS_REGION, then the profile's region (boto3 reads AWS_DEFAULT_REGION besides).
    region = config.region or os.environ.get("AWS_REGION") or session.region_name
    if region is None:
        text, status = render(
            title, [Finding("region", "BLOCKER", "no region: set AWS_REGION, or region in cdk.json")]
        )
    else:
        findings = preflight(config, region, Clients.in_region(session, region))
        text, status = render(f"{title} in {region}", findings)
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
