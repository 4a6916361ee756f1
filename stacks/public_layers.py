"""The two public Lambda layers the functions run with, named once for the constructs and for
`make preflight` (which checks that they exist in the target region before a deploy).

Both come from accounts of the commercial `aws` partition (the adapter's China layers are published by
other accounts, and for x86_64 only), which is one reason stacks/config.py refuses other partitions."""

from __future__ import annotations

# What the layers are built for; stacks/constructs/lambda_code.py deploys the functions on the same
# (tests/infra/test_stacks.py checks the two agree).
RUNTIME = "python3.13"
ARCHITECTURE = "arm64"

# Powertools publishes, per region, a public SSM parameter for each release whose value is the ARN of
# the layer that carries exactly that release: /aws/service/powertools/python/{arch}/{python}/{version}
# (Powertools' docs, "Lambda Layer" / "SSM Parameter Store"; written by .github/workflows/update_ssm.yml
# in aws-powertools/powertools-lambda-python). Resolving it at deploy time runs the release the tests
# pin in constraints.txt, in whichever region the stack lands, where a layer version number would be a
# guess (layer versions count releases, and may differ between regions).
POWERTOOLS_PARAMETER_PREFIX = f"/aws/service/powertools/python/{ARCHITECTURE}/{RUNTIME}"

# The AWS Lambda Web Adapter's public arm64 layer (github.com/aws/aws-lambda-web-adapter, "Zip Packages"
# in docs/guide/src/getting-started/zip-packages.md).
WEB_ADAPTER_LAYER_ACCOUNT = "753240598075"
WEB_ADAPTER_LAYER_NAME = "LambdaAdapterLayerArm64"


def powertools_parameter(version: str) -> str:
    """The public SSM parameter naming the Powertools layer of release `version` (e.g. 3.37.0)."""
    return f"{POWERTOOLS_PARAMETER_PREFIX}/{version}"


def web_adapter_layer_arn(version: int, *, partition: str, region: str) -> str:
    """The adapter's layer ARN; the stack passes CloudFormation's pseudo parameters, preflight literals."""
    layer = f"{WEB_ADAPTER_LAYER_NAME}:{version}"
    return f"arn:{partition}:lambda:{region}:{WEB_ADAPTER_LAYER_ACCOUNT}:layer:{layer}"
