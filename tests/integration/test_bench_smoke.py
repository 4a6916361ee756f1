"""The benchmarks of `make bench` run small, so they stay runnable (gate `performance`), and one
WebSocket audience of a few hundred connections (gate `load`). They assert counts, never timings:
the figures are printed, and docs/performance.md keeps the full runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from local.state import LocalState
from tests.bench import cold_import, sse_latency, store_throughput, websocket_latency
from tests.integration.conftest import running_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("bench")) as state:
        yield state


@pytest.mark.performance
@pytest.mark.parametrize("variant", [store_throughput.head_commit, store_throughput.counter_append])
def test_store_throughput_runs_with_concurrent_publishers_and_a_gap_free_sequence(moto_url, variant):
    # run() itself asserts that the seqs handed out are exactly 1..n
    figures = store_throughput.run(moto_url, variant, 4, 10, f"smoke-{variant.__name__}")
    print(variant.__name__, json.dumps(figures))
    assert figures["events_per_second"] > 0


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
