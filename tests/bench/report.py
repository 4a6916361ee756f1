"""docs/performance.json rendered: the cost model, the issue's goals against the figures, the tables of
docs/performance.md's generated section (between MARKERS; the hand-written analysis around it stays)
and the PNG plots in docs/images/. Pure functions of the figures, so a fixture renders the same report.

    .venv/bin/python -m tests.bench.report        # re-render from docs/performance.json (cost re-derived)
"""

from __future__ import annotations

import argparse
import json
import operator
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stacks.config import load

DOCS = Path(__file__).resolve().parents[2] / "docs"
BEGIN, END = "<!-- bench:begin (written by make bench; edit tests/bench/report.py) -->", "<!-- bench:end -->"
PLOTS = {
    "latency": "bench-latency.png",
    "deliveries": "bench-deliveries.png",
    "store": "bench-store.png",
}
# List prices, us-east-1, arm64 Lambda, DynamoDB on demand, API Gateway WebSocket (first billing tier),
# as docs/performance.md quotes them ("What an open stream costs"); the date they were read.
PRICES = {
    "as_of": "2026-11-27",
    "region": "us-east-1",
    "lambda_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "dynamodb_read_unit": 0.125 / 1e6,
    "websocket_message": 1.00 / 1e6,
    "websocket_connection_minute": 0.25 / 1e6,
}
PUBLISH_MEMORY_MB = 512  # stacks/constructs/lambda_code.py's default, which the publish functions keep


def cost(figures: Mapping[str, Any], prices: Mapping[str, Any] = PRICES) -> dict[str, Any]:
    """Dollars per million deliveries and per connection-hour for each transport, from the measured
    fan-out rate and SSE reads, at `prices`."""
    sse_config = load("prod").sse
    deployment = {
        "environment": "prod",
        "publish_memory_gb": PUBLISH_MEMORY_MB / 1024,
        "sse_memory_gb": sse_config.memory_mb / 1024,
        "sse_max_stream_seconds": sse_config.max_stream_seconds,
    }
    model: dict[str, Any] = {"prices": dict(prices), "deployment": deployment}
    per_hour = 60 * prices["websocket_connection_minute"]
    websocket: dict[str, Any] = {"per_connection_hour": per_hour}
    rate = figures.get("fanout", {}).get("deliveries_per_s")
    # A delivery is one @connections message, plus the publish function's time while it posts
    # (its measured fan-out rate, one function, FANOUT_WORKERS in parallel).
    compute = deployment["publish_memory_gb"] / rate * prices["lambda_gb_second"] if rate else 0.0
    websocket["per_million_deliveries"] = 1e6 * (prices["websocket_message"] + compute)
    model["websocket"] = {key: round(value, 6) for key, value in websocket.items()}
    model["websocket"]["includes_publish_compute"] = bool(rate)
    reads = figures.get("sse_reads_per_stream_minute")
    if reads is not None:
        stream_hour = (
            deployment["sse_memory_gb"] * 3600 * prices["lambda_gb_second"]
            + 60 * reads * prices["dynamodb_read_unit"]
            + 3600 / deployment["sse_max_stream_seconds"] * prices["lambda_request"]
        )
        # Compute is billed by the open hour; each delivery adds one read of the new event per stream.
        sse = {
            "per_connection_hour": stream_hour,
            "per_million_deliveries": 1e6 * prices["dynamodb_read_unit"],
        }
        model["sse"] = {key: round(value, 6) for key, value in sse.items()}
    return model


def _get(figures: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(figures, Mapping) or key not in figures:
            return None
        figures = figures[key]
    return figures


BATCHED = ("store", "by_events_per_request", "10")  # the store's figures for requests of 10 events
COMPARE = {"<": operator.lt, "<=": operator.le, ">=": operator.ge}
GOALS = [  # the goals: (goal, where its figure is, comparison, target)
    ("WebSocket p99 at 100 connections (ms)", ("ws_latency_ms", "100", "p99"), "<", 50),
    ("SSE p99 at 100 streams (ms)", ("sse_latency_ms", "100", "p99"), "<", 100),
    ("SSE store reads per idle stream-minute", ("sse_reads_per_stream_minute",), "<=", 10),
    ("store events/s, 8 publishers, x today's design", ("derived", "store_speedup_8"), ">=", 5),
    ("store DynamoDB requests per event, 8 publishers", ("store", "requests_per_event", "8"), "<=", 2),
    ("the same, 10 events a request: events/s, x today's", ("derived", "store_speedup_8_batched"), ">=", 5),
    (
        "the same, 10 events a request: requests per event",
        (*BATCHED, "shipped", "requests_per_event", "8"),
        "<=",
        2,
    ),
    ("client CPU per delivery (ms)", ("cpu_ms_per_delivery",), "<=", 0.2),
    ("fan-out speed-up over sequential boto3", ("fanout", "speedup_vs_sequential"), ">=", 25),
    ("worst handler cold import, x bare boto3", ("cold_import", "ratio_vs_boto3"), "<=", 1.5),
]


def goals(figures: Mapping[str, Any]) -> list[list[Any]]:
    """[goal, target, measured, "met" | "**missed**" | "not measured"] for each of the issue's goals."""
    derived = {
        "store_speedup_8": _ratio(
            _get(figures, "store", "events_per_s", "8"),
            _get(figures, "store", "baseline", "events_per_s", "8"),
        ),
        "store_speedup_8_batched": _ratio(
            _get(figures, *BATCHED, "shipped", "events_per_s", "8"),
            _get(figures, *BATCHED, "before", "events_per_s", "8"),
        ),
    }
    view = {**figures, "derived": derived}
    rows = []
    for name, path, comparison, target in GOALS:
        value = _get(view, *path)
        verdict = (
            "not measured" if value is None else "met" if COMPARE[comparison](value, target) else "**missed**"
        )
        rows.append([name, f"{comparison} {target}", value, verdict])
    return rows


def _ratio(faster: float | None, today: float | None) -> float | None:
    return round(faster / today, 2) if faster is not None and today else None


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):  # three significant figures or more
        digits = 3 if abs(value) < 1 else 2 if abs(value) < 10 else 1 if abs(value) < 1000 else 0
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _by_count(section: Mapping[str, Any] | None) -> list[str]:
    return sorted(section or {}, key=int)


def _flat(section: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in section.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def markdown(figures: Mapping[str, Any]) -> str:
    """The generated section of docs/performance.md, markers included."""
    machine = figures.get("machine", {})
    lines = [
        BEGIN,
        "## Measured by `make bench`",
        "",
        f"Measured {figures.get('measured_at', '?')} at commit `{figures.get('commit', '?')}` "
        f"({figures.get('scale', '?')} scale) on {machine.get('cpus', '?')} cores, "
        f"{machine.get('python', '?')}; 1-minute load average {_load(machine, 'load_before')} before and "
        f"{_load(machine, 'load_after')} after (other work on the machine shows there). Every figure "
        "is in docs/performance.json; the commands are listed at the end.",
        "",
        "### Goals (issue 13)",
        "",
        *_table(["goal", "target", "measured", ""], goals(figures)),
    ]
    ws, throughput = figures.get("ws_latency_ms", {}), figures.get("throughput", {})
    if ws:
        lines += ["", "### WebSocket: publish-to-receive latency and throughput", ""]
        lines += _table(
            ["connections", "events", "delivered", "p50 ms", "p95 ms", "p99 ms", "events/s", "deliveries/s"],
            [[n, ws[n].get("events"), f"{ws[n].get('deliveries')}/{ws[n].get('expected', '?')}",
              ws[n].get("p50"), ws[n].get("p95"), ws[n].get("p99"), _get(throughput, n, "events_per_s"),
              _get(throughput, n, "deliveries_per_s")] for n in _by_count(ws)],
        )  # fmt: skip
        lines += ["", f"![Latency percentiles against connections](images/{PLOTS['latency']})"]
        lines += [f"![Deliveries per second](images/{PLOTS['deliveries']})"]
    sse = figures.get("sse_latency_ms", {})
    if sse or "sse_reads_per_stream_minute" in figures:
        lines += ["", "### SSE", ""]
        lines += _table(
            ["streams", "p50 ms", "p95 ms", "p99 ms"],
            [[n, sse[n].get("p50"), sse[n].get("p95"), sse[n].get("p99")] for n in _by_count(sse)],
        )
        lines += [
            "",
            f"Store reads per idle stream-minute: {_cell(figures.get('sse_reads_per_stream_minute'))}.",
        ]
    store = figures.get("store")
    if store:
        baseline = store.get("baseline", {})
        lines += ["", "### Event store: one stream, by concurrent publishers", ""]
        by_size = store.get("by_events_per_request") or {"1": {"shipped": store, "before": baseline}}
        lines += _table(
            ["events/request", "publishers", "events/s", "before: events/s", "requests/event",
             "before: requests/event"],
            [[size, n, _get(runs, "shipped", "events_per_s", n), _get(runs, "before", "events_per_s", n),
              _get(runs, "shipped", "requests_per_event", n), _get(runs, "before", "requests_per_event", n)]
             for size, runs in sorted(by_size.items(), key=lambda item: int(item[0]))
             for n in _by_count(runs.get("shipped", {}).get("events_per_s"))],
        )  # fmt: skip
        lines += ["", f"![Requests per event and events/s by publishers](images/{PLOTS['store']})"]
    if isinstance(figures.get("fanout"), Mapping):
        lines += [
            "",
            "### Fan-out",
            "",
            *_table(["figure", "value"], [list(kv) for kv in _flat(figures["fanout"])]),
        ]
    lines += _adaptive_batching(figures.get("adaptive_batching"))
    lines += _publish_batching(figures.get("publish_batching"))
    lines += _store_round_trips(figures.get("store_round_trips"))
    cold = figures.get("cold_import")
    if cold:
        lines += ["", "### Cold import (CPU ms in a fresh interpreter, Lambda-like environment)", ""]
        boto3 = cold["boto3"]
        rows = [["`import boto3`", boto3, 1.0]] + [
            [f"`{module}`", ms, round(ms / boto3, 2)] for module, ms in cold["handlers"].items()
        ]
        lines += _table(["module", "ms", "x boto3"], rows)
    model = figures.get("cost")
    if model:
        prices = model["prices"]
        lines += ["", f"### Cost ({prices['region']} list prices of {prices['as_of']}, dollars)", ""]
        lines += _table(
            ["transport", "per million deliveries", "per connection-hour"],
            [[name, *(f"${model[name][k]:.6f}" for k in ("per_million_deliveries", "per_connection_hour"))]
             for name in ("websocket", "sse")
             if name in model],
        )  # fmt: skip
        if not model["websocket"].get("includes_publish_compute"):
            lines += ["", "(WebSocket: messages only; the fan-out rate, for the publish function's time, "
                      "was not measured.)"]  # fmt: skip
    lines += ["", "Commands:", "", *[f"- `{command}`" for command in figures.get("commands", [])]]
    lines += [f"- skipped `{name}`: {why}" for name, why in figures.get("skipped", {}).items()]
    return "\n".join([*lines, END])


def _load(machine: Mapping[str, Any], key: str) -> str:
    averages = machine.get(key) or ["?"]
    return str(averages[0])


def _publish_batching(rates: Mapping[str, Any] | None) -> list[str]:
    """A single-event producer at each rate, through BatchingPublisher and one request per event."""
    if not rates:
        return []
    lines = ["", "### A producer of single events: BatchingPublisher against a request per event", ""]
    return lines + _table(
        ["events/s offered", "producer", "events/s stored", "requests/event", "answered p99 ms",
         "frames/event", "received p50 ms", "received p99 ms"],
        [[rate, name.replace("_", " "), row.get("events_per_s"), row.get("requests_per_event"),
          _get(row, "answered_ms", "p99"), row.get("frames_per_event"), row.get("p50_ms"), row.get("p99_ms")]
         for rate, modes in sorted(rates.items(), key=lambda item: int(item[0]))
         for name, row in modes.items()],
    )  # fmt: skip


def _store_round_trips(model: Mapping[str, Any] | None) -> list[str]:
    """A publish request's time in the store with a modeled round trip per DynamoDB request."""
    if not model:
        return []
    title = f"### The store with a {model['round_trip_ms']} ms round trip per DynamoDB request (a model)"
    rows = [[size, name.replace("_", " "), row.get("p50_ms"), row.get("p99_ms")]
            for size in ("1", "10") for name, row in model.get(size, {}).items()]  # fmt: skip
    return ["", title, "", *_table(["events/request", "claims", "p50 ms", "p99 ms"], rows)]


def _adaptive_batching(rates: Mapping[str, Any] | None) -> list[str]:
    """Frames per event and latency by publish rate, folded (shipped) against each publish posting alone."""
    if not rates:
        return []
    lines = ["", "### Adaptive batching: frames per event and latency by publish rate", ""]
    if not all(isinstance(row, Mapping) and "without_folding" in row for row in rates.values()):
        return lines + _table(
            ["figure", "value"], [list(kv) for kv in _flat(rates)]
        )  # a shape not known here
    header = ["events/s", "events", "frames/event", "p50 ms", "p99 ms"]
    alone = ["alone: frames/event", "alone: p50 ms", "alone: p99 ms"]
    columns = ("frames_per_event", "p50_ms", "p99_ms")
    return lines + _table(
        [*header, *alone],
        [[rate, row.get("events"), *(row.get(key) for key in columns),
          *(row["without_folding"].get(key) for key in columns)]
         for rate, row in sorted(rates.items(), key=lambda item: int(item[0]))],
    )  # fmt: skip


def splice(document: str, section: str) -> str:
    """`document` with its generated section replaced by `section` (added after the first paragraph
    the first time), the hand-written text around it untouched."""
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        return head + section + rest.split(END, 1)[1]
    title, _, body = document.partition("\n\n")
    first, _, rest = body.partition("\n\n")
    return f"{title}\n\n{first}\n\n{section}\n\n{rest}"


def plot(figures: Mapping[str, Any], images: Path) -> list[Path]:
    """The PNGs the section links to, for the figures there are; returns the files written."""
    from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global figure list

    written = []
    ws, sse, store = figures.get("ws_latency_ms"), figures.get("sse_latency_ms"), figures.get("store")
    if ws:
        counts = _by_count(ws)
        figure = Figure(figsize=(7, 4))
        axes = figure.subplots()
        for point, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
            axes.plot(
                [int(n) for n in counts],
                [ws[n].get(point) for n in counts],
                style,
                label=f"WebSocket {point}",
            )
        for n in _by_count(sse):
            axes.plot([int(n)], [sse[n].get("p99")], "rx", markersize=10, label=f"SSE p99, {n} streams")
        axes.set(
            xscale="log", xlabel="connections", ylabel="publish-to-receive ms", title="Latency by audience"
        )
        axes.set_xticks([int(n) for n in counts], counts)
        written.append(_save(figure, images / PLOTS["latency"], axes))
        throughput = figures.get("throughput", {})
        figure = Figure(figsize=(7, 4))
        axes = figure.subplots()
        axes.bar([n for n in counts], [_get(throughput, n, "deliveries_per_s") or 0 for n in counts])
        axes.set(
            xlabel="connections", ylabel="deliveries/s", title="WebSocket deliveries per second, local stack"
        )
        written.append(_save(figure, images / PLOTS["deliveries"], axes))
    if store and store.get("events_per_s"):
        counts = _by_count(store["events_per_s"])
        figure = Figure(figsize=(10, 4))
        requests, rate = figure.subplots(1, 2)
        for offset, (label, data) in enumerate(
            (("group commit", store), ("today's design", store.get("baseline")))
        ):
            xs = [i + offset * 0.4 for i in range(len(counts))]
            requests.bar(xs, [_get(data, "requests_per_event", n) or 0 for n in counts], 0.4, label=label)
            rate.bar(xs, [_get(data, "events_per_s", n) or 0 for n in counts], 0.4, label=label)
        for axes, label in ((requests, "DynamoDB requests per event"), (rate, "events/s, one stream")):
            axes.set(xticks=[i + 0.2 for i in range(len(counts))], xticklabels=counts, xlabel="publishers")
            axes.set_ylabel(label)
        written.append(_save(figure, images / PLOTS["store"], requests, rate))
    return written


def _save(figure: Any, path: Path, *axes: Any) -> Path:
    for each in axes:
        each.grid(alpha=0.3)
        if each.get_legend_handles_labels()[0]:
            each.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    figure.clf()
    return path


def write(figures: Mapping[str, Any], docs: Path = DOCS) -> None:
    """docs/performance.md's generated section and the plots, from `figures`."""
    plot(figures, docs / "images")
    document = docs / "performance.md"
    document.write_text(splice(document.read_text(), markdown(figures)))


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    path = DOCS / "performance.json"
    figures = json.loads(path.read_text())
    figures["cost"] = cost(figures)  # derived: at the prices in this file
    path.write_text(json.dumps(figures, indent=2) + "\n")
    write(figures)


if __name__ == "__main__":
    main()
