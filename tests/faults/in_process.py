"""What the in-process fault tests share: the deployed handlers' environment on a moto server (see
tests/faults/injection.py for why a server), the metrics they printed, and a WebSocket connection
driven through the route handler with its answers recorded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from handlers import composition, websocket
from local.lambda_runtime import LocalContext
from stacks.table_layouts import EVENTS, create_table
from tests.conftest import REGION, TABLE
from tests.fuzz.test_websocket import RecordingManagement
from tests.integration.conftest import moto_url  # noqa: F401 - a fixture, for `dynamodb`


@pytest.fixture
def dynamodb(moto_url, monkeypatch) -> Iterator[Any]:  # noqa: F811 - the module's moto server
    """tests/conftest.py's `dynamodb` (so also `handler_environment`) on a moto server, where every
    client the handlers build goes: the events table, dropped with every other table after the test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    client = boto3.client("dynamodb", region_name=REGION)
    create_table(client, TABLE, EVENTS)
    yield client
    for table in client.list_tables()["TableNames"]:
        client.delete_table(TableName=table)


def metric(capsys: pytest.CaptureFixture[str], name: str, **dimensions: str) -> float:
    """The sum of `name` over the EMF documents printed since the last call, with these dimensions."""
    return metric_in(capsys.readouterr().out, name, **dimensions)


def metric_in(output: str, name: str, **dimensions: str) -> float:
    """The sum of `name` over the EMF documents in `output` that have these dimensions."""
    total = 0.0
    for line in output.splitlines():
        if line.startswith('{"_aws"'):
            document = json.loads(line)
            if name in document and all(document.get(k) == v for k, v in dimensions.items()):
                values = document[name]
                total += sum(values) if isinstance(values, list) else values
    return total


class WebSocketConnection:
    """One connection as API Gateway drives the route handler, with the `@connections` API replaced
    by a recorder (`answers.posts`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, connection_id: str = "C1", role: str = "viewer"):
        self.answers = RecordingManagement()
        monkeypatch.setattr(composition, "management", lambda: self.answers)
        self._context = {
            "connectionId": connection_id,
            "authorizer": {"sub": "alice", "role": role, "exp": int(time.time()) + 3600},
        }

    def route(self, route_key: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Invoke the route; the last answer posted, if any."""
        event = {
            "requestContext": {**self._context, "routeKey": route_key},
            "body": json.dumps(body) if body is not None else None,
        }
        websocket.handler(event, LocalContext("websocket"))
        return self.answers.posts[-1] if self.answers.posts else {}
