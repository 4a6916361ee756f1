"""The events table: per-stream gap-free sequences, idempotency markers, TTL as the replay window."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.tables import expiring_table
from stacks.table_layouts import EVENTS

# Exactly what lambdas/streaming/store/ calls: single-item conditional writes (DeleteItem releases a
# claim whose every commit attempt was refused), batch puts of committed events and their claims, and
# queries.
STORE_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
)
READ_ACTIONS = ("dynamodb:GetItem", "dynamodb:Query")  # replay and stream heads
LOOKUP_ACTIONS = ("dynamodb:GetItem",)  # one event by position (and its stream's head)


class EventsTable(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self.table = self._build_table(config)

    def grant_store_access(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.table.grant(grantee, *STORE_ACTIONS)

    def grant_read_access(self, grantee: iam.IGrantable) -> iam.Grant:
        """Replay and stream heads, for the WebSocket route handler."""
        return self.table.grant(grantee, *READ_ACTIONS)

    def grant_lookup_access(self, grantee: iam.IGrantable) -> iam.Grant:
        """Events by position, for the fan-out worker, which is handed positions rather than events."""
        return self.table.grant(grantee, *LOOKUP_ACTIONS)

    def _build_table(self, config: EnvironmentConfig) -> dynamodb.TableV2:
        return expiring_table(
            self,
            "Events",
            config,
            EVENTS,
            without_pitr_because=f"{config.name} holds only a replay window of events (TTL); "
            "point-in-time recovery is enabled in prod, where the data is retained",
        )
