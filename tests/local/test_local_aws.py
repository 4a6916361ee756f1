"""The local stack's moto patches (local/aws.py): Query answers exactly as moto does, only faster; a
partition left empty takes no memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table

from local.aws import REGION, _forgets_empty_partitions, _partition_scoped
from stacks.table_layouts import CONNECTIONS, create_table

MOTO_QUERY = Table.query


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A table of two partitions, numeric range keys 1..60 in one (written out of order) and a few in
    the other; and a table of string range keys."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        for name, kind in (("numbers", "N"), ("strings", "S")):
            client.create_table(
                TableName=name,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": kind},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        for sk in [*range(31, 61), *range(1, 31)]:
            client.put_item(
                TableName="numbers", Item={"pk": {"S": "a"}, "sk": {"N": str(sk)}, "v": {"S": "x" * sk}}
            )
        for sk in (2, 5, 9):
            client.put_item(TableName="numbers", Item={"pk": {"S": "b"}, "sk": {"N": str(sk)}})
        for sk in ("apple", "apricot", "banana", "cherry", "date"):
            client.put_item(TableName="strings", Item={"pk": {"S": "a"}, "sk": {"S": sk}})
        yield client


NUMBER_CONDITIONS = [
    ("pk = :p", {}),
    ("pk = :p AND sk > :x", {":x": "40"}),
    ("pk = :p AND sk >= :x", {":x": "40"}),
    ("pk = :p AND sk < :x", {":x": "7"}),
    ("pk = :p AND sk <= :x", {":x": "7"}),
    ("pk = :p AND sk = :x", {":x": "17"}),
    ("pk = :p AND sk = :x", {":x": "99"}),
    ("pk = :p AND sk BETWEEN :x AND :y", {":x": "10", ":y": "20"}),
    ("pk = :p AND sk BETWEEN :x AND :y", {":x": "59", ":y": "99"}),
    ("pk = :p AND sk > :x", {":x": "60"}),
    ("pk = :p AND sk > :x", {":x": "0"}),
]


def pages(client: Any, **request: Any) -> list[Any]:
    """Every page of a query, following LastEvaluatedKey."""
    answers = []
    while True:
        answer = client.query(**request)
        answer.pop("ResponseMetadata")
        answers.append(answer)
        if "LastEvaluatedKey" not in answer:
            return answers
        request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


@pytest.mark.parametrize("forward", [True, False])
@pytest.mark.parametrize("limit", [None, 7])
@pytest.mark.parametrize("partition", ["a", "b", "missing"])
@pytest.mark.parametrize(("condition", "values"), NUMBER_CONDITIONS)
def test_a_scoped_query_answers_as_moto_does(
    client, monkeypatch, condition, values, partition, limit, forward
):
    request: dict[str, Any] = {
        "TableName": "numbers",
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": {":p": {"S": partition}, **{k: {"N": v} for k, v in values.items()}},
        "ScanIndexForward": forward,
        **({"Limit": limit} if limit else {}),
    }
    expected = pages(client, **request)
    monkeypatch.setattr(Table, "query", _partition_scoped(MOTO_QUERY))
    assert pages(client, **request) == expected
    if partition == "a" and condition == "pk = :p AND sk > :x" and values[":x"] == "40":
        assert [item["sk"]["N"] for page in expected for item in page["Items"]][:1] == [
            "41" if forward else "60"
        ]


@pytest.mark.parametrize(
    ("condition", "values"),
    [
        ("pk = :p AND sk > :x", {":x": "apricot"}),
        ("pk = :p AND sk BETWEEN :x AND :y", {":x": "b", ":y": "d"}),
        ("pk = :p AND begins_with(sk, :x)", {":x": "ap"}),
    ],
)
def test_string_keys_and_begins_with_too(client, monkeypatch, condition, values):
    request = {
        "TableName": "strings",
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": {":p": {"S": "a"}, **{k: {"S": v} for k, v in values.items()}},
    }
    expected = pages(client, **request)
    assert expected[0]["Items"]  # each condition selects something
    monkeypatch.setattr(Table, "query", _partition_scoped(MOTO_QUERY))
    assert pages(client, **request) == expected


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
