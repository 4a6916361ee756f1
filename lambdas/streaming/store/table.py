"""The DynamoDB calls of the event store, on its one table: consistent reads, key-range queries,
single-item conditional writes and unconditional batch puts of items whose content is settled (no
transactions). A refused write returns the item it found."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from streaming.dynamo import deserialize, key, query_items, serialize

Item = dict[str, Any]
BATCH_WRITE_LIMIT = 25  # items per BatchWriteItem request
UNPROCESSED_ATTEMPTS = 8  # of the items DynamoDB left unprocessed, before giving up


class Table:
    def __init__(self, client: Any, name: str) -> None:
        self._client = client
        self._name = name

    def get(self, pk: str, sk: int) -> Item | None:
        response = self._client.get_item(TableName=self._name, Key=key(pk, sk), ConsistentRead=True)
        return deserialize(response["Item"]) if "Item" in response else None

    def query(self, pk: str, low: int, high: int, *, forward: bool) -> Iterator[Item]:
        """The items of `pk` with `low` <= sk <= `high`, in sk order or (not `forward`) reversed."""
        return query_items(
            self._client,
            TableName=self._name,
            KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
            ExpressionAttributeValues=serialize({":pk": pk, ":low": low, ":high": high}),
            ConsistentRead=True,
            ScanIndexForward=forward,
            Limit=100,
        )

    def put_if_absent(self, item: Item) -> Item | None:
        """Put the item unless its key exists; return the existing item (or {}) when it does."""
        return self._unless_refused(
            self._client.put_item,
            TableName=self._name,
            Item=serialize(item),
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def put_all(self, items: Sequence[Item]) -> None:
        """Put every item, overwriting: only for items whose content at their key never changes.
        Raises when DynamoDB keeps leaving some unprocessed (throttling past botocore's retries)."""
        for start in range(0, len(items), BATCH_WRITE_LIMIT):
            pending = [
                {"PutRequest": {"Item": serialize(item)}} for item in items[start : start + BATCH_WRITE_LIMIT]
            ]
            for attempt in range(UNPROCESSED_ATTEMPTS):
                response = self._client.batch_write_item(RequestItems={self._name: pending})
                pending = response.get("UnprocessedItems", {}).get(self._name, [])
                if not pending:
                    break
                time.sleep(random.uniform(0, 0.05 * 2**attempt))  # noqa: S311 -- jitter, as botocore's
            else:  # as botocore reports a call throttled past its retries
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "unprocessed"}},
                    "BatchWriteItem",
                )

    def update(
        self, pk: str, sk: int, expression: str, values: Mapping[str, Any], **options: Any
    ) -> Item | None:
        """Update one item; `options` are the request's other parameters (its condition, ...).
        Return None when done, or what the refusal returned when the condition failed ({} if nothing)."""
        return self._unless_refused(
            self._client.update_item,
            TableName=self._name,
            Key=key(pk, sk),
            UpdateExpression=expression,
            ExpressionAttributeValues=serialize(values),
            **options,
        )

    def delete_if(self, pk: str, sk: int, condition: str, values: Mapping[str, Any]) -> Item | None:
        """Delete one item if `condition` holds; like `update`, return {} when it did not."""
        return self._unless_refused(
            self._client.delete_item,
            TableName=self._name,
            Key=key(pk, sk),
            ConditionExpression=condition,
            ExpressionAttributeValues=serialize(values),
        )

    def _unless_refused(self, write: Any, **request: Any) -> Item | None:
        try:
            write(**request)
        except self._client.exceptions.ConditionalCheckFailedException as error:
            return deserialize(error.response.get("Item", {}))
        return None
