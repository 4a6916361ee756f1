"""cdk-nag findings reviewed once for the whole stack, each with its reason.
Resource-specific acknowledgements stay next to the resource they concern."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations

_BASIC_EXECUTION_ROLE = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
REVIEWED = {
    f"AwsSolutions-IAM4[Policy::{_BASIC_EXECUTION_ROLE}]": (
        "AWSLambdaBasicExecutionRole only allows writing the function's own CloudWatch Logs"
    ),
    "AwsSolutions-IAM5[Resource::*]": (
        "X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions"
    ),
    "AwsSolutions-L1": "Python 3.13 is pinned: the Powertools layer version and bundled wheels target it",
}


def acknowledge_reviewed_findings(stack: Stack) -> None:
    for finding, reason in REVIEWED.items():
        Validations.of(stack).acknowledge(Acknowledgment(id=finding, reason=reason))
