"""The local stack's console: whole lines from concurrent invocations, and no zeros from a schedule."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from local.console import Console, is_idle_metrics, scheduled
from local.lambda_runtime import LocalFunction
from local.serving import every
from streaming.observability import metrics


def test_a_line_written_in_two_parts_is_not_split_by_another_threads_line():
    out = io.StringIO()
    console = Console(out)
    first_half_written, other_line_written = threading.Event(), threading.Event()

    def emf_document() -> None:  # what print() does: the text, then the newline, in two writes
        console.write('{"_aws":{},"A":[1.0]}')
        first_half_written.set()
        other_line_written.wait(10)
        console.write("\n")

    def log_line() -> None:
        first_half_written.wait(10)
        console.write('{"level":"INFO"}\n')
        other_line_written.set()

    threads = [threading.Thread(target=emf_document), threading.Thread(target=log_line)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert out.getvalue().splitlines() == ['{"level":"INFO"}', '{"_aws":{},"A":[1.0]}']


def test_a_scheduled_invocation_prints_its_metrics_only_when_something_happened(monkeypatch):
    console = Console(io.StringIO())
    monkeypatch.setattr(sys, "stdout", console)
    closed_per_run = [0, 0, 2, 0]
    runs: list[int] = []

    @metrics.log_metrics
    def sweeper(event: dict[str, Any], context: Any) -> dict[str, int]:
        closed = closed_per_run[len(runs)] if len(runs) < len(closed_per_run) else 0
        metrics.add_metric(name="ExpiredConnectionsClosed", unit=MetricUnit.Count, value=closed)
        runs.append(closed)
        return {"closed": closed}

    async def schedule_until_four_runs() -> None:
        task = asyncio.ensure_future(every(LocalFunction("ws-sweeper", sweeper), 0.01))
        deadline = time.monotonic() + 30
        while len(runs) < len(closed_per_run) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(schedule_until_four_runs())
    assert runs[: len(closed_per_run)] == closed_per_run
    printed = [json.loads(line) for line in console.stream.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert [document["ExpiredConnectionsClosed"] for document in printed] == [[2.0]]

    # Outside a schedule (an invocation a request made, as in AWS), a zero is printed.
    sweeper({}, None)
    assert '"ExpiredConnectionsClosed":[0.0]' in console.stream.getvalue().splitlines()[-1]  # type: ignore[attr-defined]


def test_only_metric_documents_whose_every_value_is_zero_count_as_idle():
    document = {
        "_aws": {"CloudWatchMetrics": [{"Metrics": [{"Name": "A"}, {"Name": "B"}]}]},
        "A": [0.0],
        "B": 0,
    }
    assert is_idle_metrics(json.dumps(document))
    assert not is_idle_metrics(json.dumps({**document, "B": [0.0, 1.0]}))
    assert not is_idle_metrics('{"level":"INFO","message":"x"}')
    assert not is_idle_metrics('{"_aws": not json')


def test_a_schedule_prints_a_gauge_again_only_when_it_changed():
    console = Console(io.StringIO())

    def gauge(value: float, role: str, timestamp: int) -> str:
        directive = {"Namespace": "N", "Dimensions": [["role"]], "Metrics": [{"Name": "ConnectionsOpen"}]}
        document = {"_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [directive]}}
        return json.dumps({**document, "role": role, "ConnectionsOpen": [value]}) + "\n"

    token = scheduled.set(True)
    try:
        for value, role, timestamp in [(1, "viewer", 1), (1, "viewer", 2), (1, "admin", 3), (2, "viewer", 4)]:
            console.write(gauge(value, role, timestamp))
        console.write('{"level":"INFO","message":"a log line is always printed"}\n' * 2)
    finally:
        scheduled.reset(token)
    printed = [json.loads(line) for line in console.stream.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert [(d.get("role"), d.get("ConnectionsOpen")) for d in printed] == [
        ("viewer", [1]),
        ("admin", [1]),
        ("viewer", [2]),
        (None, None),
        (None, None),
    ]
