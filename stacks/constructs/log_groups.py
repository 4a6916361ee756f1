"""Log groups with the environment's retention and removal policy."""

from __future__ import annotations

from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.removal import removal_policy


def retained_log_group(scope: Construct, construct_id: str, config: EnvironmentConfig) -> logs.LogGroup:
    return logs.LogGroup(
        scope,
        construct_id,
        retention=_RETENTION[config.log_retention_days],
        removal_policy=removal_policy(config),
    )


_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
}
