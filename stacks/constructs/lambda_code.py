"""Lambda code built without Docker, and the function defaults every handler shares."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import (
    BundlingOptions,
    DockerImage,
    Duration,
    ILocalBundling,
)
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks import public_layers
from stacks.config import ROOT, EnvironmentConfig
from stacks.constructs.log_groups import retained_log_group
from stacks.nag import acknowledge_function_findings

LAMBDA_SOURCE = ROOT / "lambdas"
# The public layers are built for these (stacks/public_layers.py).
RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64
# pip's view of that platform, for wheels of the runtime dependencies.
PIP_PLATFORM = ("--platform", "manylinux2014_aarch64", "--implementation", "cp", "--python-version", "3.13")
# Copied with their files' modes (shutil.copytree copies with copy2): the SSE start script sse/run.sh
# must stay executable, Lambda runs it as the handler.
PACKAGES = ("streaming", "handlers", "sse")


@jsii.implements(ILocalBundling)
class LocalPythonBundling:
    """Copies the runtime packages and pip-installs lambdas/requirements.txt for the Lambda platform."""

    def try_bundle(self, output_dir: str, *, image: Any = None, **_: Any) -> bool:
        build_asset(Path(output_dir))
        return True


def build_asset(output: Path, source: Path = LAMBDA_SOURCE) -> None:
    for package in PACKAGES:
        shutil.copytree(
            source / package,
            output / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )
    requirements = source / "requirements.txt"
    if any(line.strip() and not line.startswith("#") for line in requirements.read_text().splitlines()):
        subprocess.run(  # noqa: S603 - fixed arguments, no shell
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "--no-compile",
                *PIP_PLATFORM,
                "--target",
                str(output),
                "-r",
                str(requirements),
            ],
            check=True,
        )
        # Console scripts (uvicorn's) name this machine's interpreter; the start script runs `python -m`.
        shutil.rmtree(output / "bin", ignore_errors=True)


def lambda_code() -> lambda_.Code:
    """One asset for every handler: lambdas/streaming, lambdas/handlers and lambdas/sse plus bundled
    requirements."""
    return lambda_.Code.from_asset(
        str(LAMBDA_SOURCE),
        bundling=BundlingOptions(
            # Never used: local bundling always succeeds. CDK requires an image to be named.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),
            local=LocalPythonBundling(),
        ),
    )


class PythonFunctionFactory(Construct):
    """Shared defaults: runtime, architecture, Powertools layer, tracing, JSON logs with retention."""

    def __init__(self, scope: Construct, construct_id: str, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self._code = lambda_code()
        # The layer of exactly the Powertools release the tests ran with, resolved by CloudFormation
        # from Powertools' public parameter in the region deployed to (stacks/public_layers.py).
        self._powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            ssm.StringParameter.value_for_string_parameter(
                self, public_layers.powertools_parameter(config.powertools_version)
            ),
        )

    def function(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        environment: dict[str, str],
        timeout: Duration,
        memory_size: int = 512,
        extra_layers: Sequence[lambda_.ILayerVersion] = (),
        **kwargs: Any,
    ) -> lambda_.Function:
        log_group = retained_log_group(scope, f"{construct_id}Logs", self._config)
        function = lambda_.Function(
            scope,
            construct_id,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=self._code,
            handler=handler,
            description=description,
            layers=[self._powertools, *extra_layers],
            memory_size=memory_size,
            timeout=timeout,
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            log_group=log_group,
            environment=environment,
            **kwargs,
        )
        acknowledge_function_findings(function)
        return function
