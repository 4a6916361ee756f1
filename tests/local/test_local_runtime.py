"""The local Lambda runtime: functions sharing one process keep their own log keys and metrics, as
functions in their own execution environments do; the Invoke API answers failures as Lambda does."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.metrics import MetricUnit
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from local.lambda_runtime import LocalFunction, function_app, invoke_app, isolate_invocations
from streaming.observability import logger, metrics


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    isolate_invocations()
    lines = io.StringIO()
    before = logger.registered_handler.setStream(lines)  # type: ignore[attr-defined]
    try:
        yield lines
    finally:
        logger.registered_handler.setStream(before)  # type: ignore[attr-defined]


def logged(lines: io.StringIO, message: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in lines.getvalue().splitlines()]
    return [entry for entry in entries if entry["message"] == message]


def handler(name: str, started: threading.Event, proceed: threading.Event) -> Any:
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        logger.append_keys(route=name)
        metrics.add_metric(name=f"{name}Handled", unit=MetricUnit.Count, value=1)
        started.set()
        assert proceed.wait(10)
        logger.info("handled")
        return {}

    return handle


def test_overlapping_invocations_of_two_functions_keep_their_own_log_keys_and_metrics(log_lines, capsys):
    a_started, a_proceeds, b_started, b_proceeds = (threading.Event() for _ in range(4))
    b_proceeds.set()
    first = LocalFunction("function-a", handler("A", a_started, a_proceeds))
    second = LocalFunction("function-b", handler("B", b_started, b_proceeds))
    a = threading.Thread(target=first.invoke, args=({},))
    a.start()
    assert a_started.wait(10)
    second.invoke({})  # all of B's invocation happens in the middle of A's
    a_proceeds.set()
    a.join(10)

    by_route = {entry["route"]: entry for entry in logged(log_lines, "handled")}
    assert {route: entry["function_name"] for route, entry in by_route.items()} == {
        "A": "function-a",
        "B": "function-b",
    }
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = [[m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]] for doc in documents]
    assert sorted(names) == [["AHandled"], ["BHandled"]]


def test_an_asgi_function_logs_with_its_own_name_after_another_function_ran(log_lines):
    started, proceed = threading.Event(), threading.Event()
    proceed.set()
    LocalFunction("publish-http", handler("publish", started, proceed)).invoke({})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        logger.info("sse stream")
        await PlainTextResponse("ok")(scope, receive, send)

    client = TestClient(function_app(app, "sse", memory_mb=256, timeout_seconds=900))
    assert client.get("/events").status_code == 200
    [entry] = logged(log_lines, "sse stream")
    assert (entry["function_name"], entry["function_memory_size"]) == ("sse", 256)
    assert "route" not in entry  # nothing of publish-http's invocation


def test_the_invoke_api_answers_a_failed_invocation_as_lambda_does():
    def failing(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise ValueError("detail-type is not a known event type")

    client = TestClient(invoke_app({"f": LocalFunction("f", failing)}))
    answer = client.post("/2015-03-31/functions/f/invocations", content=b"{}")
    assert answer.status_code == 200
    assert answer.headers["x-amz-function-error"] == "Unhandled"
    assert answer.json() == {
        "errorMessage": "detail-type is not a known event type",
        "errorType": "ValueError",
    }
    assert client.post("/2015-03-31/functions/nope/invocations", content=b"{}").status_code == 404
