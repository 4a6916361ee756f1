"""The benchmarks of `make bench` run small, so they stay runnable (gate `performance`), and one
WebSocket audience of a few hundred connections (gate `load`). They assert counts, never timings:
the figures are printed, and docs/performance.md keeps the full runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from local.state import LocalState
from streaming.store import EventStore
from tests.bench import (
    adaptive_batching,
    cold_import,
    publish_batching,
    sse_latency,
    store_round_trips,
    store_throughput,
    websocket_latency,
)
from tests.integration.conftest import running_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("bench")) as state:
        yield state


@pytest.mark.performance
@pytest.mark.parametrize("before", [False, True], ids=["shipped", "before"])
def test_store_throughput_runs_with_concurrent_publishers_and_a_gap_free_sequence(moto_url, before):
    # run() itself asserts that the seqs handed out are exactly 1..n
    if before and not store_throughput.baseline_available():
        pytest.skip(f"this clone's history lacks {store_throughput.BASELINE_COMMIT}")
    store_class = store_throughput.baseline_store_class() if before else EventStore
    figures = store_throughput.run(moto_url, store_class, publishers=4, total=40, per_request=5)
    print(json.dumps(figures))
    assert figures["events"] == 40 and figures["events_per_s"] > 0
    assert figures["requests_per_event"] == round(sum(figures["requests"].values()) / 40, 2)


@pytest.mark.performance
def test_websocket_latency_runs_and_every_connection_gets_every_event(stack):
    figures = asyncio.run(websocket_latency.measure(stack, connections=10, events=5))
    print(json.dumps(figures))
    assert figures["delivered"] == figures["expected"] == 50


@pytest.mark.performance
def test_sse_latency_runs_and_every_stream_gets_every_event(stack):
    figures = asyncio.run(sse_latency.latency(stack, streams=3, events=3, poll_ms=100))
    print(json.dumps(figures))
    assert figures["delivered"] == "9/9"


@pytest.mark.performance
@pytest.mark.batching
def test_adaptive_batching_runs_and_folding_only_ever_saves_frames(stack):
    figures = adaptive_batching.measure(stack, connections=3, rates=[200], seconds=0.5)["200"]
    print(json.dumps(figures))
    alone = figures["without_folding"]
    assert figures["deliveries"] == alone["deliveries"] == 300
    assert alone["frames"] == alone["frames_posted"] == 300  # each publish posted for itself
    assert figures["frames"] == figures["frames_posted"] <= 300  # as many or fewer, never more


@pytest.mark.performance
def test_publish_batching_runs_and_batching_only_ever_saves_requests(stack):
    modes = publish_batching.measure(stack, connections=2, rates=[50], seconds=1)["50"]
    print(json.dumps(modes))
    alone, batching = modes["one_request_per_event"], modes["batching"]
    assert alone["deliveries"] == batching["deliveries"] == 100  # 50 events to each connection
    assert alone["requests_per_event"] == 1.0 and batching["requests_per_event"] <= 1.0


@pytest.mark.performance
def test_store_round_trips_runs_each_way_of_claiming():
    figures = store_round_trips.measure(round_trip_ms=1, requests=3)
    print(json.dumps(figures))
    for size in ("1", "10"):
        assert set(figures[size]) == {"one_after_another", "at_once"}
        assert all(row["requests"] == 3 and row["p50_ms"] > 0 for row in figures[size].values())


@pytest.mark.performance
def test_cold_import_times_each_module_in_a_fresh_interpreter_against_boto3():
    figures = cold_import.measure(1, ("handlers.ws_sweeper", "sse.app"))
    print(json.dumps(figures))
    assert figures["boto3"] > 0 and set(figures["handlers"]) == {"handlers.ws_sweeper", "sse.app"}
    worst = max(figures["handlers"].values())
    assert figures["ratio_vs_boto3"] == round(worst / figures["boto3"], 2)


@pytest.mark.load
def test_three_hundred_websocket_connections_each_get_every_event_once(stack):
    figures = asyncio.run(websocket_latency.measure(stack, connections=300, events=10))
    print(json.dumps(figures))
    assert figures["delivered"] == figures["expected"] == 3000
