from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from stacks.config import load
from stacks.table_layouts import CONNECTIONS, EVENTS, create_table
from streaming.connections import ConnectionRegistry
from streaming.observability import metrics
from streaming.publish import Publisher
from streaming.settings import DeliverySettings, Settings
from streaming.store import EventStore

# The fuzz suite's count of inputs tried, and the chaos run's figures, printed at the end of a run.
pytest_plugins = ["tests.fuzz.counting", "tests.chaos"]
REGION = "us-east-1"  # moto's in-process mock; nothing reaches AWS
TABLE = "events-test"
CONNECTIONS_TABLE = "connections-test"


@pytest.fixture(autouse=True, scope="session")
def _fake_aws_credentials() -> None:
    # Tests never reach AWS: moto intercepts in-process, and the local stack listens on loopback.
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        POWERTOOLS_TRACE_DISABLED="true",
    )


class Clock:
    """A settable clock that ticks 1 ms per reading, so replay-window tests need no sleeping and
    events appended in a row still get distinct timestamps."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        self.now += 0.001
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def settings() -> Settings:
    return load("dev").runtime_settings(TABLE)


@pytest.fixture
def delivery_settings() -> DeliverySettings:
    """Live delivery with nothing listening at the management URL (port 9, discard)."""
    return DeliverySettings(
        connections_table=CONNECTIONS_TABLE,
        management_url="http://127.0.0.1:9/local",
        fanout_function="",
        fanout_chunk_connections=250,
        compress_above_bytes=8192,
        messages_per_second=10,
        burst=20,
    )


@pytest.fixture(autouse=True)
def no_metrics_left_over() -> None:
    """Each test starts without the metric values an earlier test in this process added and nothing
    flushed (the functions' metrics object is one per process)."""
    metrics.clear_metrics()


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_table(client, TABLE, EVENTS)
        yield client


@pytest.fixture
def handler_environment(
    dynamodb: Any, settings: Settings, delivery_settings: DeliverySettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The deployed handlers' environment on moto, with the composition root rebuilt for it (what it
    built belongs to one test's environment and moto)."""
    create_table(dynamodb, CONNECTIONS_TABLE, CONNECTIONS)
    publish_rate = load("dev").publish_rate_settings()
    for name, value in {**settings.to_env(), **delivery_settings.to_env(), **publish_rate.to_env()}.items():
        monkeypatch.setenv(name, value)
    _forget_composition()
    yield
    _forget_composition()


def _forget_composition() -> None:
    from handlers import composition

    for built in vars(composition).values():
        if hasattr(built, "cache_clear"):
            built.cache_clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(dynamodb: Any, settings: Settings, clock: Clock) -> EventStore:
    return EventStore(dynamodb, TABLE, settings.streams_by_type, settings.replay_window_seconds, clock=clock)


@pytest.fixture
def registry(dynamodb: Any, settings: Settings, clock: Clock) -> ConnectionRegistry:
    create_table(dynamodb, CONNECTIONS_TABLE, CONNECTIONS)
    return ConnectionRegistry(dynamodb, CONNECTIONS_TABLE, settings.roles, clock=clock)


@pytest.fixture
def publisher(settings: Settings, store: EventStore) -> Publisher:
    return Publisher(settings, store)


def new_id() -> str:
    return str(uuid.uuid4())


def signal(event_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid signal.created event as a producer would send it."""
    data = {
        "signal_id": "sig-1",
        "instrument": "CH0012032048",
        "direction": "long",
        "strength": 0.7,
        "horizon": "1w",
        "source": "momentum-v3",
        "generated_at": "2026-11-27T08:14:03.512Z",
    }
    return {"id": event_id or new_id(), "type": "signal.created", "data": data, **overrides}


def example(event_type: str, settings: Settings) -> dict[str, Any]:
    """A valid event of any type, built from its schema's example."""
    schema = settings.catalog.schema(event_type, 1)
    return {"id": new_id(), "type": event_type, "data": schema["examples"][0]}
