"""DynamoDB tables the way this project keeps them: on demand, TTL on `expires_at`, and the environment's
removal policy, point-in-time recovery and deletion protection."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.removal import removal_policy
from streaming import constants as c


def expiring_table(
    scope: Construct,
    construct_id: str,
    config: EnvironmentConfig,
    *,
    sort_key_type: dynamodb.AttributeType,
    without_pitr_because: str,
) -> dynamodb.TableV2:
    """`without_pitr_because`: why this table may go without point-in-time recovery where the
    environment turns it off (the cdk-nag finding is acknowledged with it)."""
    table = dynamodb.TableV2(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name=c.PARTITION_KEY, type=dynamodb.AttributeType.STRING),
        sort_key=dynamodb.Attribute(name=c.SORT_KEY, type=sort_key_type),
        billing=dynamodb.Billing.on_demand(),
        time_to_live_attribute=c.TTL_ATTRIBUTE,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=config.point_in_time_recovery
        ),
        deletion_protection=config.deletion_protection,
        removal_policy=removal_policy(config),
    )
    if not config.point_in_time_recovery:
        Validations.of(table).acknowledge(Acknowledgment(id="AwsSolutions-DDB3", reason=without_pitr_because))
    return table
