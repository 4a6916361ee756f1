"""The environment's removal policy in CDK terms; the configuration itself stays free of CDK types."""

from __future__ import annotations

from aws_cdk import RemovalPolicy

from stacks.config import EnvironmentConfig


def removal_policy(config: EnvironmentConfig) -> RemovalPolicy:
    """What happens to data (tables, logs, undelivered events, keys) when the stack is deleted."""
    return RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY
