"""Local AWS: a moto server made safe for concurrent requests and closer to DynamoDB's costs."""

from __future__ import annotations

import base64
import bisect
import functools
import inspect
import json
import logging
import threading
from typing import Any

from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler, DynamoResult
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

REGION = "us-east-1"


class SerializedMoto:
    """moto's backends are not thread-safe (concurrent conditional writes can be lost), so every
    request goes through one lock. Real DynamoDB needs no such thing; the store does not rely on it."""

    def __init__(self) -> None:
        self._app = DomainDispatcherApplication(create_backend_app)
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        with self._lock:
            return list(self._app(environ, start_response))


# moto's cost per request grows with what it touches, where DynamoDB's does not; two patches bring the
# local stack's item operations closer to DynamoDB's shape (measured in docs/performance.md), and a
# third keeps its memory from growing with every key ever read or deleted. All leave answers unchanged.
# They are applied when the local moto server starts (`start_moto`), never at import: tests that mock
# AWS in-process run on moto as it is.


def _partition_scoped(query: Any) -> Any:
    """A base-table Query reads only the queried partition (moto sorts every item of the table), and of
    it only the run of range keys its key condition selects (moto measures the size of every item it
    passes over): a replay of a stream's tail costs the same however long the stream is."""

    signature = inspect.signature(query)  # arguments by name, wherever moto's callers put them

    @functools.wraps(query)
    def scoped(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, hash_key, *args, **kwargs).arguments
        if arguments.get("index_name") or hash_key is None or not self.range_key_attr:
            return query(self, hash_key, *args, **kwargs)
        items = self.items[hash_key].values() if hash_key in self.items else []
        keyed = sorted(((item.range_key.cast_value, item) for item in items), key=lambda pair: pair[0])
        run = _selected(keyed, arguments.get("range_comparison"), arguments.get("range_objs") or [])
        self.all_items = lambda: run  # type: ignore[method-assign]  # one request at a time
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    return scoped


def _selected(keyed: list[tuple[Any, Any]], comparison: str | None, bounds: list[Any]) -> list[Any]:
    """The items (sorted by range key) whose keys `comparison` selects; moto still checks each one. All
    of them for a condition that is not a range, or bounds of another type than the keys."""
    keys = [key for key, _ in keyed]
    low, high = 0, len(keyed)
    try:
        values = [bound.cast_value for bound in bounds]
        if comparison in (">", "GT"):
            low = bisect.bisect_right(keys, values[0])
        elif comparison in (">=", "GE"):
            low = bisect.bisect_left(keys, values[0])
        elif comparison in ("<", "LT"):
            high = bisect.bisect_left(keys, values[0])
        elif comparison in ("<=", "LE"):
            high = bisect.bisect_right(keys, values[0])
        elif comparison in ("=", "EQ"):
            low, high = bisect.bisect_left(keys, values[0]), bisect.bisect_right(keys, values[0])
        elif comparison == "BETWEEN":
            low, high = bisect.bisect_left(keys, values[0]), bisect.bisect_right(keys, values[1])
    except (TypeError, IndexError):
        low, high = 0, len(keyed)
    # And one item past each end: moto, having filled `Limit`, answers LastEvaluatedKey if any item follows.
    return [item for _, item in keyed[max(0, low - 1) : high + 1]]


def _forgets_empty_partitions(operation: Any) -> Any:
    """A partition left empty is forgotten. moto's items are a defaultdict of partitions: a GetItem or
    DeleteItem keeps the partition of its key, empty, for as long as the server runs: a few KB for every
    WebSocket connection the stack ever had (its `connection#<id>`), found by the soak run."""

    @functools.wraps(operation)
    def forgetting(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return operation(self, hash_key, *args, **kwargs)
        finally:
            if self.range_key_attr and hash_key in self.items and not self.items[hash_key]:
                del self.items[hash_key]

    return forgetting


_ITEM_ACTIONS = frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem"})


def _plain_json_items(serialized: Any) -> Any:
    """Item answers are already in DynamoDB's wire format: write them as JSON. moto's generic
    serializer walks the API model for every attribute, about 0.4 ms per returned item."""

    @functools.wraps(serialized)
    def plain(self: DynamoHandler, result: Any) -> Any:
        if not isinstance(result, DynamoResult) or self._get_action() not in _ITEM_ACTIONS:
            return serialized(self, result)
        try:
            body = json.dumps(result.result, default=_wire_bytes)
        except TypeError:  # something that is not plain item data: leave it to moto
            return serialized(self, result)
        return 200, {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}, body

    return plain


def _wire_bytes(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


@functools.cache  # once per process
def patch_moto() -> None:
    """Apply the patches to moto's classes (for every moto in this process)."""
    Table.query = _partition_scoped(Table.query)  # type: ignore[method-assign]
    Table.get_item = _forgets_empty_partitions(Table.get_item)  # type: ignore[method-assign]
    Table.delete_item = _forgets_empty_partitions(Table.delete_item)  # type: ignore[method-assign]
    DynamoHandler.serialized = _plain_json_items(DynamoHandler.serialized)  # type: ignore[method-assign]


def start_moto(host: str = "127.0.0.1", port: int = 0) -> tuple[BaseWSGIServer, str]:
    """Start moto on loopback in a background thread; returns the server and its endpoint URL."""
    patch_moto()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per AWS call
    server = make_server(host, port, SerializedMoto(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    return server, f"http://{host}:{server.server_port}"


def moto_client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for the local moto server (which accepts any credentials)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
    )


def main() -> None:
    """Run moto alone (used by tests that want it in a process of its own): prints its URL."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server, url = start_moto(port=args.port)
    print(url, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
