"""DynamoDB attribute-value conversion shared by the store and the connection registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

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
