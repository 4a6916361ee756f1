"""DynamoDB attribute-value conversion and paged queries, shared by the store and the connection
registry."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as Unreachable

from streaming.observability import count

# What DynamoDB answers a request it will not serve now: nothing of it was done, and botocore retries it.
THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def serialize(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values (str, int, Decimal, dict, set, ...) to attribute values, name by name."""
    return {name: _serializer.serialize(value) for name, value in values.items()}


def deserialize(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute values back to Python values (numbers come back as Decimal)."""
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}


def key(pk: str, sk: str | int) -> dict[str, Any]:
    """The primary key of an item in the project's tables (`pk` string, `sk` string or number)."""
    return serialize({"pk": pk, "sk": sk})


def query_items(client: Any, **request: Any) -> Iterator[dict[str, Any]]:
    """Every item a Query finds, page after page, deserialized."""
    while True:
        response = client.query(**request)
        for raw in response.get("Items", []):
            yield deserialize(raw)
        if "LastEvaluatedKey" not in response:
            return
        request = {**request, "ExclusiveStartKey": response["LastEvaluatedKey"]}


def unexpired_roles(client: Any, table: str, partition: str, now: float) -> Iterator[str]:
    """The `role` of each item of `partition` whose sort key, led by its zero-padded expiry time, is
    past `now` (the connections' and the SSE streams' listings); `unknown` where an item names none."""
    for item in query_items(
        client,
        TableName=table,
        KeyConditionExpression="pk = :pk AND sk >= :now",
        ExpressionAttributeValues=serialize({":pk": partition, ":now": f"{int(now) + 1:012d}"}),
        ProjectionExpression="#role",
        ExpressionAttributeNames={"#role": "role"},
    ):
        yield item.get("role", "unknown")


def count_throttles(event_name: str, parsed_response: Mapping[str, Any] | None = None, **_: Any) -> None:
    """botocore's `response-received` event, once per attempt: counts the attempts DynamoDB throttled,
    by operation (botocore retries them; a call fails only once its every attempt was)."""
    if (parsed_response or {}).get("Error", {}).get("Code") in THROTTLING_CODES:
        count("StoreThrottles", operation=event_name.rsplit(".", 1)[-1])


def unavailable(error: Exception) -> bool:
    """DynamoDB could not serve a call, even after botocore's retries: throttled, failed on its side,
    or not reached. Any other error is the caller's."""
    if isinstance(error, ClientError):
        answer = error.response.get("Error", {}).get("Code")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return answer in THROTTLING_CODES or status >= 500
    return isinstance(error, Unreachable | HTTPClientError)
