"""The DynamoDB tables' layouts as plain data: the one declaration the CDK constructs deploy, the local
stack creates on moto, and the tests create under moto's mock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streaming import constants as c


@dataclass(frozen=True)
class TableLayout:
    """Key schema and TTL attribute; billing is on demand everywhere, and no table has an index."""

    partition_key: str
    sort_key: str
    sort_key_type: Literal["S", "N"]  # DynamoDB's attribute types: string, number
    ttl_attribute: str


EVENTS = TableLayout(c.PARTITION_KEY, c.SORT_KEY, "N", c.TTL_ATTRIBUTE)  # stream partition, numeric seq
CONNECTIONS = TableLayout(c.PARTITION_KEY, c.SORT_KEY, "S", c.TTL_ATTRIBUTE)  # also SSE's stream leases


def create_table(dynamodb: Any, table_name: str, layout: TableLayout) -> None:
    """Create a table with `layout` through a boto3 DynamoDB client (moto's, locally and in tests)."""
    dynamodb.create_table(
        TableName=table_name,
        KeySchema=[
            {"AttributeName": layout.partition_key, "KeyType": "HASH"},
            {"AttributeName": layout.sort_key, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": layout.partition_key, "AttributeType": "S"},
            {"AttributeName": layout.sort_key, "AttributeType": layout.sort_key_type},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": layout.ttl_attribute},
    )
