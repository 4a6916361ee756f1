"""Local AWS: moto server made safe for concurrent requests, and the resources the stack creates."""

from __future__ import annotations

import logging
import threading
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from streaming import constants as c

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


def start_moto(host: str = "127.0.0.1", port: int = 0) -> tuple[BaseWSGIServer, str]:
    """Start moto on loopback in a background thread; returns the server and its endpoint URL."""
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


def create_connections_table(dynamodb: Any, table_name: str) -> None:
    """The connections table (string keys, TTL), as the WebSocket API's construct will declare it."""
    dynamodb.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": c.TTL_ATTRIBUTE}
    )


def create_events_table(dynamodb: Any, table_name: str) -> None:
    """The events table as stacks/constructs/event_store.py declares it (key schema and TTL)."""
    dynamodb.create_table(
        TableName=table_name,
        KeySchema=[
            {"AttributeName": c.PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": c.SORT_KEY, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": c.PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": c.SORT_KEY, "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": c.TTL_ATTRIBUTE}
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
