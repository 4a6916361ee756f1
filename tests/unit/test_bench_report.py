"""`make bench`'s report (tests/bench/report.py, tests/bench/run.py) from a fixture of figures: the goals
judged, the tables, the generated section spliced into the hand-written document, the plots, the cost
model against the hand-worked figures of docs/performance.md, and the merging of the benchmarks' JSON."""

from __future__ import annotations

import copy

import pytest

from tests.bench import report, run, websocket_latency

# The store's figures for requests of one event: at the top of its section (the comparison), and
# again among those by events per request, as store_throughput writes them.
SINGLE_EVENTS = {
    "requests_per_event": {"1": 1.5, "8": 1.75, "32": 1.2},
    "events_per_s": {"1": 120.0, "8": 150.0, "32": 260.0},
}
SINGLE_EVENTS_BEFORE = {
    "requests_per_event": {"1": 5.0, "8": 6.9, "32": 9.0},
    "events_per_s": {"1": 50, "8": 36, "32": 20},
}
FIGURES = {
    "measured_at": "2026-11-30T17:00:00+00:00",
    "commit": "0123456789ab",
    "scale": "quick",
    "machine": {"cpus": 2, "python": "Python 3.11.7", "load_before": [1.0], "load_after": [2.0]},
    "commands": [".venv/bin/python -m tests.bench.cold_import --repeat 3 --json PATH (12 s)"],
    "skipped": {"adaptive_batching": "not on this branch"},
    "ws_latency_ms": {
        "100": {
            "p50": 31.5,
            "p95": 44.0,
            "p99": 48.25,
            "max": 50.0,
            "events": 10,
            "deliveries": 1000,
            "expected": 1000,
        },
        "1000": {
            "p50": 400.0,
            "p95": 650.0,
            "p99": 707.5,
            "max": 740.0,
            "events": 10,
            "deliveries": 9990,
            "expected": 10000,
        },
    },
    "throughput": {
        "100": {"events_per_s": 14.2, "deliveries_per_s": 1420.0},
        "1000": {"events_per_s": 1.6, "deliveries_per_s": 1643.0},
    },
    "sse_latency_ms": {"100": {"p50": 60.0, "p95": 95.0, "p99": 130.5}},
    "sse_reads_per_stream_minute": 120,
    "store": {
        **SINGLE_EVENTS,
        "baseline": SINGLE_EVENTS_BEFORE,
        "by_events_per_request": {
            "1": {"shipped": SINGLE_EVENTS, "before": SINGLE_EVENTS_BEFORE},
            "10": {
                "shipped": {"requests_per_event": {"8": 2.2}, "events_per_s": {"8": 200.0}},
                "before": {"requests_per_event": {"8": 8.0}, "events_per_s": {"8": 32.0}},
            },
        },
    },
    "adaptive_batching": {
        "100": {
            "events": 200,
            "frames_per_event": 0.25,
            "p50_ms": 12.0,
            "p99_ms": 30.5,
            "without_folding": {"events": 200, "frames_per_event": 1.0, "p50_ms": 14.0, "p99_ms": 90.0},
        },
    },
    "publish_batching": {
        "100": {
            "one_request_per_event": {
                "events_per_s": 38.0,
                "requests_per_event": 1.0,
                "answered_ms": {"p99": 4900.0},
                "frames_per_event": 1.0,
                "p50_ms": 2500.0,
                "p99_ms": 4917.0,
            },
            "batching": {
                "events_per_s": 98.0,
                "requests_per_event": 0.237,
                "answered_ms": {"p99": 132.0},
                "frames_per_event": 0.237,
                "p50_ms": 61.0,
                "p99_ms": 125.4,
            },
        }
    },
    "store_round_trips": {
        "round_trip_ms": 5.0,
        "10": {
            "one_after_another": {"p50_ms": 70.0, "p99_ms": 90.0},
            "at_once": {"p50_ms": 21.5, "p99_ms": 30.0},
        },
    },
    "cpu_ms_per_delivery": 0.289,
    "fanout": {"speedup_vs_sequential": 30.1, "deliveries_per_s": 2661.0},
    "cold_import": {
        "boto3": 200.0,
        "handlers": {"handlers.websocket": 290.0, "sse.app": 320.0},
        "worst": "sse.app",
        "ratio_vs_boto3": 1.6,
    },
}
HAND_WRITTEN = "# Performance\n\nFigures measured here.\n\n## Event store\n\nAnalysis that stays.\n"


def test_each_goal_is_judged_from_its_own_figure():
    verdicts = {goal: (measured, verdict) for goal, _, measured, verdict in report.goals(FIGURES)}
    assert verdicts["WebSocket p99 at 100 connections (ms)"] == (48.25, "met")
    assert verdicts["SSE p99 at 100 streams (ms)"] == (130.5, "**missed**")
    assert verdicts["SSE store reads per idle stream-minute"] == (120, "**missed**")
    assert verdicts["store events/s, 8 publishers, x today's design"] == (4.17, "**missed**")  # 150 / 36
    assert verdicts["store DynamoDB requests per event, 8 publishers"] == (1.75, "met")
    assert verdicts["the same, 10 events a request: events/s, x today's"] == (6.25, "met")  # 200 / 32
    assert verdicts["the same, 10 events a request: requests per event"] == (2.2, "**missed**")
    assert verdicts["client CPU per delivery (ms)"] == (0.289, "**missed**")
    assert verdicts["fan-out speed-up over sequential boto3"] == (30.1, "met")
    assert verdicts["worst handler cold import, x bare boto3"] == (1.6, "**missed**")


def test_a_goal_without_its_figure_says_not_measured():
    partial = {key: value for key, value in FIGURES.items() if key not in ("store", "cold_import")}
    verdicts = {goal: verdict for goal, _, _, verdict in report.goals(partial)}
    assert verdicts["store events/s, 8 publishers, x today's design"] == "not measured"
    assert verdicts["the same, 10 events a request: events/s, x today's"] == "not measured"
    assert verdicts["worst handler cold import, x bare boto3"] == "not measured"
    assert "### Event store" not in report.markdown(partial)


def test_the_section_holds_every_table_with_the_figures():
    section = report.markdown(FIGURES)
    assert section.startswith(report.BEGIN) and section.endswith(report.END)
    assert "| 1000 | 10 | 9990/10000 | 400.0 | 650.0 | 707.5 | 1.60 | 1,643 |" in section
    assert "| 100 | 60.0 | 95.0 | 130.5 |" in section
    assert "| 1 | 8 | 150.0 | 36 | 1.75 | 6.90 |" in section
    assert "| 10 | 8 | 200.0 | 32.0 | 2.20 | 8.00 |" in section
    assert "| `sse.app` | 320.0 | 1.60 |" in section
    assert "| speedup_vs_sequential | 30.1 |" in section
    assert "| 100 | batching | 98.0 | 0.237 | 132.0 | 0.237 | 61.0 | 125.4 |" in section
    assert "| 10 | at once | 21.5 | 30.0 |" in section
    assert "| 100 | 200 | 0.250 | 12.0 | 30.5 | 1.00 | 14.0 | 90.0 |" in section
    assert "commit `0123456789ab`" in section
    assert "- skipped `adaptive_batching`: not on this branch" in section
    for image in report.PLOTS.values():
        assert f"(images/{image})" in section


def test_the_section_goes_after_the_first_paragraph_once_then_is_replaced_in_place():
    first = report.splice(HAND_WRITTEN, report.markdown(FIGURES))
    assert first.startswith("# Performance\n\nFigures measured here.\n\n" + report.BEGIN)
    assert first.endswith(report.END + "\n\n## Event store\n\nAnalysis that stays.\n")
    rerun = copy.deepcopy(FIGURES)
    rerun["ws_latency_ms"]["100"]["p99"] = 77.7
    second = report.splice(first, report.markdown(rerun))
    assert "77.7" in second and "48.2" not in second
    assert second.count(report.BEGIN) == 1
    assert second.replace(report.markdown(rerun), "") == first.replace(report.markdown(FIGURES), "")


def test_the_plots_are_written_as_png(tmp_path):
    written = report.plot(FIGURES, tmp_path)
    assert sorted(path.name for path in written) == sorted(report.PLOTS.values())
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cost_model_matches_the_hand_worked_figures_of_the_docs():
    model = report.cost(FIGURES)
    # docs/performance.md, "What an open stream costs": SSE about $0.013 an idle hour (compute $0.0120,
    # 7,200 head reads $0.0009); WebSocket $0.000015 a connection-hour, $1.00 per million messages.
    assert model["sse"]["per_connection_hour"] == pytest.approx(0.0129, abs=0.0001)
    assert model["websocket"]["per_connection_hour"] == pytest.approx(0.000015)
    assert 1.00 < model["websocket"]["per_million_deliveries"] < 1.01  # messages plus a little compute
    assert model["prices"]["as_of"] == report.PRICES["as_of"]


def test_the_benchmarks_json_merges_section_by_section():
    merged = run.merge(
        {"ws_latency_ms": {"100": {"p50": 1}}}, {"ws_latency_ms": {"1000": {"p50": 2}}, "x": 3}
    )
    assert merged == {"ws_latency_ms": {"100": {"p50": 1}, "1000": {"p50": 2}}, "x": 3}


def test_a_benchmark_without_json_output_is_skipped_with_the_reason():
    assert run.skip_reason("tests.bench.no_such_benchmark") == "not on this branch"
    assert run.skip_reason("local.token") == "has no --json flag yet"
    assert run.skip_reason("tests.bench.cold_import") is None
    # imports the handler code first: tests/bench/__init__.py puts it on the path
    assert run.skip_reason("tests.bench.fanout_throughput") in (None, "has no --json flag yet")


def test_the_websocket_bench_writes_its_rows_under_the_report_keys():
    row = {"connections": 100, "events": 20, "delivered": 2000, "expected": 2000, "p50": 52.04, "p95": 70.0,
           "p99": 80.3, "max": 89.0, "events_per_second": 14.06, "deliveries_per_second": 1406.2,
           "subscriber_cpu_ms": 0.0841, "setup_seconds": 4.24}  # fmt: skip
    figures = websocket_latency.as_json([row])
    assert figures["ws_latency_ms"]["100"] == {
        "p50": 52.04, "p95": 70.0, "p99": 80.3, "max": 89.0, "events": 20, "expected": 2000,
        "subscriber_cpu_ms": 0.084, "deliveries": 2000, "setup_s": 4.2,
    }  # fmt: skip
    assert figures["throughput"]["100"] == {"events_per_s": 14.1, "deliveries_per_s": 1406.2}
    assert report.goals(figures)[0][2:] == [80.3, "**missed**"]
