"""DynamoDB tables the way this project keeps them: the layout from stacks/table_layouts.py, on demand,
and the environment's removal policy, point-in-time recovery and deletion protection."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.removal import removal_policy
from stacks.table_layouts import TableLayout

_ATTRIBUTE_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}


def expiring_table(
    scope: Construct,
    construct_id: str,
    config: EnvironmentConfig,
    layout: TableLayout,
    *,
    without_pitr_because: str,
) -> dynamodb.TableV2:
    """`without_pitr_because`: why this table may go without point-in-time recovery where the
    environment turns it off (the cdk-nag finding is acknowledged with it)."""
    table = dynamodb.TableV2(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name=layout.partition_key, type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name=layout.sort_key, type=_ATTRIBUTE_TYPES[layout.sort_key_type]),
        billing=dynamodb.Billing.on_demand(),
        time_to_live_attribute=layout.ttl_attribute,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=config.point_in_time_recovery
        ),
        deletion_protection=config.deletion_protection,
        removal_policy=removal_policy(config),
    )
    if not config.point_in_time_recovery:
        Validations.of(table).acknowledge(Acknowledgment(id="AwsSolutions-DDB3", reason=without_pitr_because))
    return table
