"""`make run`'s stack, started as a developer starts it: publish to the printed endpoint, read it back."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import jwt
import pytest
from botocore.credentials import Credentials

from clients.publisher import BatchingPublisher, PublishClient, PublishError
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from streaming.replay import replay_after
from streaming.store import EventStore
from tests.conftest import example, signal
from tests.integration.conftest import outputs, running_local_stack, until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]
TIMEOUT = 60  # seconds, generous: the machine may be loaded


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("local")) as state:
        yield state


def test_endpoints_file_has_the_deployed_stacks_output_keys_and_loopback_urls(local_stack):
    values = outputs(local_stack)
    assert set(values) >= {"PublishUrl", "EventsTableName", "EventBusName"}
    assert values["PublishUrl"].startswith("http://127.0.0.1:")
    assert values["AwsEndpointUrl"].startswith("http://127.0.0.1:")


def test_a_published_event_is_readable_back_through_the_replay_query(local_stack, settings):
    client = local_client(local_stack)
    raw = example("risk.alert", settings)
    result = client.publish(raw)
    assert (result["id"], result["stream"], result["duplicate"]) == (raw["id"], "risk", False)

    page = client.events_after(types=["risk.alert"], role="approver")
    assert raw["id"] in [event["id"] for event in page["events"]]

    values = outputs(local_stack)
    dynamodb = boto3.client("dynamodb", endpoint_url=values["AwsEndpointUrl"], region_name=values["Region"])
    store = EventStore(
        dynamodb, values["EventsTableName"], settings.streams_by_type, settings.replay_window_seconds
    )
    replayed = replay_after(store, settings.roles, "approver", None, types=["risk.alert"])
    [event] = [event for event in replayed.events if event.id == raw["id"]]
    assert (event.seq, event.data) == (result["seq"], raw["data"])
    assert all(e.type != "risk.alert" for e in replay_after(store, settings.roles, "viewer", None).events)


def test_a_bad_batch_is_refused_with_its_code_and_stores_nothing(local_stack):
    client = local_client(local_stack)
    before = client.streams()["streams"]
    with pytest.raises(PublishError) as raised:
        client.publish([signal(), {**signal(), "type": "order.filled"}])
    assert (raised.value.status, raised.value.code) == (400, "unknown_type")
    assert client.streams()["streams"] == before


def recording(client: PublishClient, gate: threading.Event | None = None) -> list[int]:
    """The sizes of the requests `client.publish` sends from now on; each waits for `gate` if given."""
    sizes: list[int] = []
    send = client.publish

    def publish(events: Any) -> Any:
        sizes.append(len(events))
        if gate is not None:
            assert gate.wait(TIMEOUT)
        return send(events)

    client.publish = publish  # type: ignore[method-assign]
    return sizes


def test_a_batching_publisher_sends_what_arrives_during_a_request_in_the_next_one_in_order(local_stack):
    client = local_client(local_stack)
    sizes = recording(client)
    batches = [[signal() for _ in range(20)] for _ in range(8)]

    def produce(events: list[dict[str, Any]]) -> list[int]:
        return [future.result(TIMEOUT)["seq"] for future in [publisher.submit(e) for e in events]]

    with BatchingPublisher(client) as publisher, ThreadPoolExecutor(len(batches)) as producers:
        seqs = list(producers.map(produce, batches))
    for own in seqs:  # each producer's events in the order it submitted them
        assert own == sorted(own)
    assert len({seq for own in seqs for seq in own}) == 160
    assert sum(sizes) == 160 and len(sizes) < 160 // 4, sizes


def test_a_batching_publisher_sends_an_event_at_once_when_nothing_is_in_flight(local_stack):
    client = local_client(local_stack)
    sizes = recording(client)
    with BatchingPublisher(client) as publisher:
        results = [publisher.publish(signal(), TIMEOUT) for _ in range(5)]
    assert sizes == [1] * 5 and [r["duplicate"] for r in results] == [False] * 5


def test_a_batching_publisher_gives_each_event_its_own_answer_when_one_fails_the_request(local_stack):
    client, gate = local_client(local_stack), threading.Event()
    sizes = recording(client, gate)
    good, bad, also_good = signal(), {**signal(), "type": "order.filled"}, signal()
    with BatchingPublisher(client) as publisher:
        first = publisher.submit(signal())
        asyncio.run(until(lambda: sizes, TIMEOUT))  # held in flight: what is submitted next waits
        futures = [publisher.submit(event) for event in (good, bad, also_good)]
        gate.set()
        assert first.result(TIMEOUT)["duplicate"] is False
        assert futures[0].result(TIMEOUT)["id"] == good["id"]
        with pytest.raises(PublishError) as refused:
            futures[1].result(TIMEOUT)
        assert futures[2].result(TIMEOUT)["id"] == also_good["id"]
    assert refused.value.code == "unknown_type"
    assert sizes == [1, 3, 1, 1, 1]


def test_a_batching_publisher_does_not_send_an_event_its_caller_cancelled(local_stack):
    client, gate = local_client(local_stack), threading.Event()
    sizes = recording(client, gate)
    with BatchingPublisher(client) as publisher:
        first = publisher.submit(signal())
        asyncio.run(until(lambda: sizes, TIMEOUT))
        cancelled, kept = publisher.submit(signal()), publisher.submit(signal())
        assert cancelled.cancel()
        gate.set()
        assert first.result(TIMEOUT)["seq"] < kept.result(TIMEOUT)["seq"]
    assert sizes == [1, 1]


def test_unsigned_and_wrongly_signed_requests_are_forbidden(local_stack):
    url = outputs(local_stack)["PublishUrl"]
    assert httpx.post(url + "events", json=signal()).status_code == 403
    impostor = PublishClient(
        url, region="us-east-1", credentials=Credentials("LOCALIMPOSTOR", "not-the-secret")
    )
    assert impostor.request("POST", "events", body=json.dumps(signal()).encode()).status_code == 403
    creds = local_stack.credentials()
    wrong_secret = PublishClient(
        url, region="us-east-1", credentials=Credentials(creds.access_key_id, "guess")
    )
    assert wrong_secret.request("GET", "streams").status_code == 403


def test_make_token_issues_a_token_signed_with_the_local_secret(local_stack):
    token = issue(local_stack, "analyst", "alice")
    claims = jwt.decode(
        token, local_stack.jwt_secret(), algorithms=["HS256"], audience=load("dev").auth.audience
    )
    assert (claims["sub"], claims["role"]) == ("alice", "analyst")
    assert claims["exp"] > time.time()
    with pytest.raises(ValueError, match="unknown role"):
        issue(local_stack, "superuser", "mallory")


def test_local_secrets_are_private_to_the_owner(local_stack):
    for name in ("jwt-secret", "publisher-credentials.json"):
        assert (Path(local_stack.directory) / name).stat().st_mode & 0o077 == 0
