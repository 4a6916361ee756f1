"""The local moto's patches (local/aws.py), on moto in process with each patch applied for the test."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table

from local.aws import REGION, _forgets_empty_partitions
from stacks.table_layouts import CONNECTIONS, create_table


def test_partitions_whose_keys_were_only_read_or_deleted_take_no_memory(monkeypatch):
    """Every WebSocket connection has a partition of its own: one left behind per connection grew the
    local stack by a few KB a connection (the soak run)."""
    for operation in ("get_item", "delete_item"):
        monkeypatch.setattr(Table, operation, _forgets_empty_partitions(getattr(Table, operation)))
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_table(client, "connections", CONNECTIONS)
        for i in range(50):
            key = {"pk": {"S": f"connection#{i}"}, "sk": {"S": "meta"}}
            client.put_item(TableName="connections", Item={**key, "role": {"S": "viewer"}})
            assert client.get_item(TableName="connections", Key=key)["Item"]["role"] == {"S": "viewer"}
            client.delete_item(TableName="connections", Key=key)
            client.delete_item(TableName="connections", Key=key)  # again: already gone
            client.get_item(TableName="connections", Key={**key, "pk": {"S": f"never#{i}"}})
        client.put_item(TableName="connections", Item={"pk": {"S": "kept"}, "sk": {"S": "a"}})
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table("connections")
        assert [key.value for key in table.items] == ["kept"]
        assert client.scan(TableName="connections")["Count"] == 1


pytestmark = pytest.mark.connections
