"""The connections table: WebSocket connections, their subscriptions and expiry records, and the SSE
stream leases. Shared by the WebSocket API and SSE, so it belongs to neither: each function is granted
exactly the calls its code makes (lambdas/streaming/connections.py, leases.py)."""

from __future__ import annotations

from typing import cast

from aws_cdk import CfnElement, CfnOutput
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.tables import expiring_table
from stacks.table_layouts import CONNECTIONS
from streaming import constants as c

# The table was created inside the WebSocket API construct; a new logical id would replace it (and
# lose every open connection's records) on the next deploy, so it keeps the one it was created with.
LOGICAL_ID = "WebSocketApiConnectionsFD21ACAC"

# The route handler registers, subscribes and rate-limits connections.
ROUTE_HANDLER_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
)
# Whoever delivers finds subscribers and removes a connection that answered 410.
DELIVERY_ACTIONS = ("dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:Query")
# The sweeper Queries the due expiry records and deletes them, then removes each connection (GetItem,
# DeleteItem); its only other writes are the stats item and the notice marks (granted apart below).
SWEEPER_ACTIONS = ("dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:Query")
# Stream leases: count a subject's and check one's own (Query), take one (PutItem), return one or
# replace the oldest (DeleteItem).
LEASE_ACTIONS = ("dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem")


class ConnectionStore(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self.table = expiring_table(
            self,
            "Connections",
            config,
            CONNECTIONS,
            without_pitr_because=f"{config.name}: connection records live a little over API Gateway's "
            "2-hour connection limit (TTL) and clients rebuild them by reconnecting; "
            "point-in-time recovery is enabled in prod",
        )
        cast(CfnElement, self.table.node.default_child).override_logical_id(LOGICAL_ID)
        CfnOutput(
            self, c.OUTPUT_CONNECTIONS_TABLE, key=c.OUTPUT_CONNECTIONS_TABLE, value=self.table.table_name
        )

    @property
    def table_name(self) -> str:
        return self.table.table_name

    def grant_route_handler(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.table.grant(grantee, *ROUTE_HANDLER_ACTIONS)

    def grant_delivery(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.table.grant(grantee, *DELIVERY_ACTIONS)

    def grant_sweeper(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.table.grant(grantee, *SWEEPER_ACTIONS)

    def grant_stats(self, grantee: iam.IGrantable) -> iam.Grant:
        """Write the connection stats item (streaming.stats), and no other item."""
        return self._grant_in_partition(grantee, "dynamodb:PutItem", c.STATS_PARTITION)

    def grant_notices(self, grantee: iam.IGrantable) -> iam.Grant:
        """Mark a reconnect notice sent on a connection's expiry record (streaming.connections), and
        update no other item."""
        return self._grant_in_partition(grantee, "dynamodb:UpdateItem", c.EXPIRY_PARTITION)

    def _grant_in_partition(self, grantee: iam.IGrantable, action: str, partition: str) -> iam.Grant:
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[action],
            resource_arns=[self.table.table_arn],
            conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [partition]}},
        )

    def grant_leases(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.table.grant(grantee, *LEASE_ACTIONS)
