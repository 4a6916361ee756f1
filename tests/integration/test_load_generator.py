"""The load generator (tools/load.py, `make load`): a short bounded run against the local stack, its
JSON, and the guard that keeps it on loopback unless a deployed stack is named with --outputs."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import running_local_stack
from tools import load

pytestmark = [pytest.mark.integration, pytest.mark.load, pytest.mark.xdist_group("local-stack")]


@pytest.mark.parametrize(("transport", "connections"), [("websocket", 8), ("sse", 3)])
def test_a_short_run_delivers_every_event_to_every_connection_and_writes_its_figures(
    tmp_path, transport, connections
):
    report = tmp_path / "load.json"
    with running_local_stack(tmp_path) as state:
        status = load.main(
            [
                "--state-dir", str(state.directory), "--transport", transport,
                "--connections", str(connections), "--rate", "10", "--events", "6", "--json", str(report),
            ]
        )  # fmt: skip
    figures = json.loads(report.read_text())
    assert status == 0, figures["failures"]
    assert (figures["target"], figures["transport"]) == ("Streaming-local", transport)
    assert figures["events_published"] == 6
    assert figures["deliveries"] == figures["expected_deliveries"] == 6 * connections
    latency = figures["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]


def test_a_stack_off_loopback_is_refused_unless_named_with_outputs(tmp_path, capsys):
    remote = {
        "PublishUrl": "https://abc.lambda-url.eu-central-1.on.aws/",
        "WebSocketUrl": "wss://abc.execute-api.eu-central-1.amazonaws.com/dev",
        "SseUrl": "https://def.lambda-url.eu-central-1.on.aws/",
    }
    (tmp_path / "endpoints.json").write_text(json.dumps({"Streaming-local": remote}))
    assert load.main(["--state-dir", str(tmp_path), "--connections", "1", "--events", "1"]) == 2
    assert "is not on loopback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [["--connections", "100000"], ["--rate", "0"], ["--duration", "86400"], ["--stack", "Streaming-dev"]],
)
def test_every_bound_is_enforced_before_anything_starts(option):
    with pytest.raises(SystemExit) as exit_:
        load.parse(option)
    assert exit_.value.code == 2


def test_percentiles_are_nearest_rank_over_the_values():
    assert load.percentiles(range(1, 101)) == {"p50": 51, "p95": 96, "p99": 100, "max": 100}
    assert load.percentiles([]) == {}
