"""The events table: per-stream gap-free sequences, idempotency markers, TTL as the replay window."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import EnvironmentConfig
from streaming import constants as c

# Exactly what lambdas/streaming/store.py calls: single-item conditional writes and queries.
STORE_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query")


class EventStore(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self.table = self._build_table(config)

    def grant_store_access(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.table.grant(grantee, *STORE_ACTIONS)

    def _build_table(self, config: EnvironmentConfig) -> dynamodb.TableV2:
        table = dynamodb.TableV2(
            self,
            "Events",
            partition_key=dynamodb.Attribute(name=c.PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=c.SORT_KEY, type=dynamodb.AttributeType.NUMBER),
            billing=dynamodb.Billing.on_demand(),
            time_to_live_attribute=c.TTL_ATTRIBUTE,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=config.point_in_time_recovery
            ),
            deletion_protection=config.deletion_protection,
            removal_policy=config.removal_policy,
        )
        if not config.point_in_time_recovery:
            Validations.of(table).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-DDB3",
                    reason=f"{config.name} holds only a replay window of events (TTL); "
                    "point-in-time recovery is enabled in prod, where the data is retained",
                )
            )
        return table
