"""8 publishers in parallel, 500 events each, on one stream: the sequence is exactly 1..4000.

Each publisher has its own store and client, as separate Lambda environments would; they meet only
in the table (moto server on loopback, serialized as the brief requires for moto)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from local.aws import moto_client
from stacks.table_layouts import EVENTS, create_table
from streaming.errors import ErrorCode, StreamingError
from streaming.events import parse_new_event
from streaming.results import Appended
from streaming.store import EventStore
from streaming.store.commit import TAIL_EVENTS
from tests.conftest import TABLE, signal

pytestmark = [pytest.mark.integration, pytest.mark.events, pytest.mark.xdist_group("concurrency")]
PUBLISHERS, EVENTS_EACH = 8, 500
RETRIES = 5


def run_publishers(moto_url: str, settings, batches: list[list[dict[str, Any]]]) -> list[list[Appended]]:
    results: list[list[Appended]] = [[] for _ in batches]
    failures: list[BaseException] = []

    def publish(index: int) -> None:
        client = moto_client("dynamodb", moto_url)
        store = EventStore(client, TABLE, settings.streams_by_type, settings.replay_window_seconds)
        try:
            for raw in batches[index]:
                event = parse_new_event(raw, settings.catalog, settings.max_event_bytes)
                results[index].extend(append_as_documented(store, event, f"publisher-{index}"))
        except BaseException as error:  # reported after join
            failures.append(error)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not failures, failures
    return results


def append_as_documented(store: EventStore, event: Any, producer: str) -> list[Appended]:
    """What docs/publishing.md tells producers: on 503 stream_contended or 409 publish_in_progress,
    publish again with the same id. (On a slow machine a publisher can run out of attempts.)"""
    for _ in range(RETRIES):
        try:
            return store.append([event], producer)
        except StreamingError as error:
            if error.error not in (ErrorCode.STREAM_CONTENDED, ErrorCode.PUBLISH_IN_PROGRESS):
                raise
            time.sleep(0.1)
    return store.append([event], producer)


def item_count(client) -> int:
    return sum(
        page["Count"] for page in client.get_paginator("scan").paginate(TableName=TABLE, Select="COUNT")
    )


def test_parallel_publishers_get_a_gap_free_sequence_and_republishing_stores_nothing(moto_url, settings):
    client = moto_client("dynamodb", moto_url)
    create_table(client, TABLE, EVENTS)
    batches = [[signal() for _ in range(EVENTS_EACH)] for _ in range(PUBLISHERS)]

    results = run_publishers(moto_url, settings, batches)

    seqs = sorted(result.seq for batch in results for result in batch)
    assert seqs == list(range(1, PUBLISHERS * EVENTS_EACH + 1))
    for batch in results:  # each publisher's own events are in its publishing order
        assert [r.seq for r in batch] == sorted(r.seq for r in batch)
    store = EventStore(client, TABLE, settings.streams_by_type, settings.replay_window_seconds)
    assert store.heads()["market"] == PUBLISHERS * EVENTS_EACH
    stored = item_count(client)

    again = run_publishers(moto_url, settings, batches)

    assert all(result.duplicate for batch in again for result in batch)
    assert {r.id: r.seq for b in again for r in b} == {r.id: r.seq for b in results for r in b}
    # An event row below the head's tail for each event, an id claim for each, the head.
    head = client.get_item(TableName=TABLE, Key={"pk": {"S": "stream#market"}, "sk": {"N": "0"}})["Item"]
    tail = len(head["batch"]["L"])
    assert 0 < tail <= TAIL_EVENTS
    assert item_count(client) == stored == 2 * PUBLISHERS * EVENTS_EACH - tail + 1
