"""What the in-process fault tests share: the deployed handlers' environment on a moto server (see
tests/faults/injection.py for why a server), the metrics they printed, a WebSocket connection driven
through the route handler with its answers recorded, and the signing key and the SSE app with it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import httpx
import pytest
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS
from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

from handlers import composition, websocket
from local.lambda_runtime import LocalContext
from stacks.config import load
from stacks.table_layouts import EVENTS, create_table
from streaming.hs256 import SigningKeys, issue_token
from streaming.settings import AuthSettings
from tests.conftest import CONNECTIONS_TABLE, REGION, TABLE
from tests.faults.injection import Faults
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


KEY = "k" * 64


@dataclass
class SigningKey:
    arn: str
    client: Any  # Secrets Manager, as the functions' Powertools provider reads it
    faults: Faults


@pytest.fixture
def signing_key(monkeypatch) -> Iterator[SigningKey]:
    """The HS256 key in Secrets Manager on the moto server, read by the functions through Powertools
    (its provider's client carries the faults), and the SSE app's environment, with streams of 5 s."""
    client = boto3.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(Name=f"signing-key-{uuid.uuid4()}", SecretString=KEY)["ARN"]
    config = load("dev")
    sse = replace(config.sse_settings(CONNECTIONS_TABLE, ""), max_stream_seconds=5)
    for name, value in {**config.auth_settings(arn).to_env(), **sse.to_env()}.items():
        monkeypatch.setenv(name, value)
    _forget_sse_app()
    parameters.clear_caches()  # the values read, and the providers
    monkeypatch.setitem(DEFAULT_PROVIDERS, "secrets", SecretsProvider(boto3_client=client))
    yield SigningKey(arn, client, Faults(client))
    parameters.clear_caches()
    _forget_sse_app()


def _forget_sse_app() -> None:
    from sse import app

    for built in (app._settings, app._leases, app._tailer):
        built.cache_clear()


def token(role: str = "viewer") -> str:
    auth = AuthSettings.from_env()
    return issue_token(
        SigningKeys.parse(KEY),
        audience=auth.audience,
        issuer=auth.issuer,
        role_claim=auth.role_claim,
        subject="alice",
        role=role,
        ttl_seconds=600,
    )


def sse(bearer: str, **query: str) -> httpx.Response:
    """GET /events of the SSE app (read to its end: a stream ends itself after 5 s here), in an event
    loop of its own, so with a tailer of its own (a tailer serves the streams of one loop)."""
    from sse.app import _tailer, app

    _tailer.cache_clear()

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sse.local") as client:
            headers = {"Authorization": f"Bearer {bearer}"}
            return await client.get("/events", params=query, headers=headers, timeout=60)

    return asyncio.run(get())


def event_ids(stream: httpx.Response) -> list[str]:
    """The ids of the events an SSE response carried, in order (not its heartbeats or its end)."""
    ids = []
    for message in stream.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in message.splitlines() if ": " in line)
        if fields.get("event") not in (None, "heartbeat", "end") and "data" in fields:
            ids.append(json.loads(fields["data"])["id"])
    return ids
