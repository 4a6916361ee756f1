"""cdk-nag findings every function has by design, each acknowledged on the one resource it concerns
(never stack-wide: the same finding anywhere else still fails synth). Findings particular to one
resource are acknowledged next to that resource."""

from __future__ import annotations

from typing import cast

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import IConstruct

_BASIC_EXECUTION_ROLE = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
_BASIC_EXECUTION = f"AwsSolutions-IAM4[Policy::{_BASIC_EXECUTION_ROLE}]"
_WILDCARD_RESOURCE = "AwsSolutions-IAM5[Resource::*]"
_RUNTIME = "AwsSolutions-L1"
# What active tracing grants every function on Resource "*": X-Ray has no resource-level permissions
# for them. The only wildcard resource these stacks grant (tests/infra/test_stacks.py keeps it so).
XRAY_WRITE_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
REVIEWED = {
    _BASIC_EXECUTION: "AWSLambdaBasicExecutionRole only allows writing the function's own CloudWatch Logs",
    _WILDCARD_RESOURCE: f"Active tracing: {' and '.join(XRAY_WRITE_ACTIONS)} support no resource-level "
    "permissions",
    _RUNTIME: "Python 3.13 is pinned: the public Powertools and Lambda Web Adapter layers and the bundled "
    "wheels target it",
}


def acknowledge_function_findings(function: lambda_.Function) -> None:
    """On the function's role (the managed policy), its role's policy (X-Ray) and the function (runtime)."""
    role = cast(iam.Role, function.role)
    concerned: dict[str, IConstruct] = {
        _BASIC_EXECUTION: _resource(role),
        _WILDCARD_RESOURCE: _resource(role.node.find_child("DefaultPolicy")),
        _RUNTIME: _resource(function),
    }
    for finding, reason in REVIEWED.items():
        Validations.of(concerned[finding]).acknowledge(Acknowledgment(id=finding, reason=reason))


def _resource(construct: IConstruct) -> IConstruct:
    """The CloudFormation resource of an L2 construct, which is what cdk-nag reports."""
    resource = construct.node.default_child
    assert resource is not None, construct.node.path
    return resource
