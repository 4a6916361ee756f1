"""The soak harness (tests/soak.py) in every `make test`: a short run of it against the local stack,
with the same checks `make soak` makes over 10 minutes, so it does not rot; and its judgement, shown
to find each kind of leak it looks for in series made to have one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.conftest import running_local_stack
from tests.soak import PROCESSES, RECORDS, STORE_KB_PER_EVENT, judge, plot, soak, write_csv

pytestmark = pytest.mark.soak


@pytest.mark.integration
@pytest.mark.xdist_group("local-stack")
def test_a_short_soak_finds_nothing_growing_and_nothing_left_behind(tmp_path):
    with running_local_stack(tmp_path) as state:
        report = asyncio.run(soak(state, seconds=30, warmup_seconds=8, interval=2, subscribers=8, seed=5))
    print(json.dumps(report.figures))
    assert report.leaks == []
    # It did churn: every role's subscribers on both transports, leaving cleanly and abruptly.
    assert set(report.figures["sessions"]) == {
        "websocket clean",
        "websocket abrupt",
        "sse clean",
        "sse abrupt",
    }
    assert report.figures["events_published"] > 0 and report.figures["events_received"] > 0
    assert report.figures["samples"] >= 6
    write_csv(report.rows, tmp_path / "soak.csv")
    plot(report.rows, tmp_path / "soak.png")
    assert len((tmp_path / "soak.csv").read_text().splitlines()) == len(report.rows) + 1
    assert (tmp_path / "soak.png").read_bytes().startswith(b"\x89PNG")


def row(i: int = 0, **changes: float) -> dict[str, Any]:
    """Sample `i` of a stack that churns at a steady level (as a series: `series`)."""
    steady: dict[str, Any] = {"seconds": 5 * i, "phase": "churn", "events_stored": 0}
    for process in PROCESSES:
        steady |= {f"{process}_{name}": 0 for name in ("rss_mb", "fds", "sockets", "tasks", "connections")}
        steady |= {f"{process}_rss_mb": 150.0, f"{process}_fds": 30, f"{process}_sockets": 20}
        steady |= {f"{process}_tasks": 25, f"{process}_connections": 9}
    steady |= {"gateway_websockets": 0, "gateway_invocations": 0, **dict.fromkeys(RECORDS, 0)}
    return steady | changes


def series(**growth_per_sample: float) -> list[dict[str, Any]]:
    """30 samples, each column given growing by that much per sample."""
    return [
        row(i, **{name: row()[name] + i * step for name, step in growth_per_sample.items()})
        for i in range(30)
    ]


IDLE = row(main_tasks=12, gateway_tasks=7, main_connections=1, gateway_connections=1)


def test_a_steady_run_that_comes_back_to_its_baseline_is_no_leak():
    figures, leaks = judge(series(), IDLE, IDLE)
    assert leaks == []
    assert figures["gateway"]["rss"]["growth_mb"] == 0


@pytest.mark.parametrize(
    ("growth", "found"),
    [
        ({"gateway_rss_mb": 0.5}, "gateway: RSS grew 10.0 MB"),  # 200 KB a second, unlike any store
        ({"main_fds": 1}, "main: fds grew by 20.0"),
        ({"gateway_sockets": 1}, "gateway: sockets grew by 20.0"),
        ({"main_tasks": 1}, "main: tasks grew by 20.0"),
    ],
)
def test_growth_while_churning_is_a_leak(growth, found):
    _, leaks = judge(series(**growth), IDLE, IDLE)
    assert [leak for leak in leaks if leak.startswith(found)] == leaks != []


def test_the_main_process_may_grow_by_what_moto_stores_and_no_more():
    """Events are kept in moto's memory (DynamoDB's TTL expires them when deployed)."""
    stored = 20 * 1024 / STORE_KB_PER_EVENT  # 20 MB's worth of events between the thirds
    per_sample = stored / 20  # the thirds' medians are 20 samples apart
    _, leaks = judge(series(events_stored=per_sample, main_rss_mb=0.9), IDLE, IDLE)
    assert leaks == []  # 18 MB grown: within the store's 20 MB and the noise allowed
    _, leaks = judge(series(events_stored=per_sample, main_rss_mb=1.5), IDLE, IDLE)
    assert leaks == ["main: RSS grew 30.0 MB while churning (allowed 28.0)"]


@pytest.mark.parametrize(
    ("left", "found"),
    [
        ({"main_tasks": 15}, "main: 15 tasks once idle again, 12 before"),
        ({"gateway_connections": 2}, "gateway: 2 connections once idle again, 1 before"),
        ({"main_sockets": IDLE["main_sockets"] + 7}, "main: 27 sockets once idle again, 20 before"),
        ({"gateway_websockets": 1}, "gateway_websockets 1 once idle again"),
        ({"sse_leases": 2}, "connection records left once idle again"),
        ({"ws_expiry": 1}, "connection records left once idle again"),
    ],
)
def test_what_is_not_back_to_the_baseline_once_the_subscribers_left_is_a_leak(left, found):
    _, leaks = judge(series(), IDLE, IDLE | left)
    assert len(leaks) == 1 and leaks[0].startswith(found)
