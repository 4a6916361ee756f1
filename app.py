#!/usr/bin/env python3
"""CDK entry point: one stack per environment (dev, staging, prod) from cdk.json, checked by cdk-nag."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "lambdas"))  # stacks read the shared constants

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from stacks.config import ENVIRONMENTS, load
from stacks.streaming_stack import StreamingStack


def build_app(app: App | None = None) -> App:
    app = app or App()
    for name in ENVIRONMENTS:
        config = load(name)
        StreamingStack(app, config, env=Environment(account=config.account, region=config.region))
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build_app().synth()
