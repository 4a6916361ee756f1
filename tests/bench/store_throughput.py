"""`make bench`: publish throughput of the event store on the local moto server, by number of
concurrent publishers on one stream, against the store as it was before group commit (read from git
at BASELINE_COMMIT into a temporary package, so both run side by side in the same run).

Per run: events/s, DynamoDB requests per event (every call the publishers' clients make) and lost
head races per event, for publish requests of 1 event and of 10. Prints one table, and with
`--json PATH` writes {"store": {...}} for the performance report. Loopback only, bounded by event count.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from local.aws import moto_client
from stacks.config import load
from stacks.table_layouts import EVENTS, create_table
from streaming.errors import ErrorCode, StreamingError
from streaming.events import NewEvent, parse_new_event
from tests.conftest import signal

BASELINE_COMMIT = "14ce60a"  # the last commit with one head update per event
PUBLISHERS = (1, 8, 32)
EVENTS_PER_REQUEST = (1, 10)


def baseline_available() -> bool:
    """The baseline is read from git: a shallow clone may not have it."""
    found = subprocess.run(["git", "cat-file", "-e", f"{BASELINE_COMMIT}^{{commit}}"], capture_output=True)
    return found.returncode == 0


def baseline_store_class() -> Any:
    """EventStore as of BASELINE_COMMIT, importable next to today's as `baseline_store`."""
    root = Path(tempfile.mkdtemp(prefix="baseline-store-"))
    package = root / "baseline_store"
    package.mkdir()
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", BASELINE_COMMIT, "lambdas/streaming/store/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for path in listing:
        source = subprocess.run(
            ["git", "show", f"{BASELINE_COMMIT}:{path}"], check=True, capture_output=True, text=True
        ).stdout
        (package / Path(path).name).write_text(source.replace("streaming.store", "baseline_store"))
    sys.path.insert(0, str(root))
    return importlib.import_module("baseline_store").EventStore


def publish(store: Any, batch: list[NewEvent]) -> list[Any]:
    """As a producer does: a request refused as too contended is sent again with the same ids."""
    while True:
        try:
            return list(store.append(batch, "bench"))
        except StreamingError as error:
            if error.error is not ErrorCode.STREAM_CONTENDED:
                raise


def run(moto_url: str, store_class: Any, publishers: int, total: int, per_request: int) -> dict[str, float]:
    settings = load("dev").runtime_settings("bench")
    table = f"bench-{store_class.__module__.split('.')[0]}-{publishers}-{per_request}"
    create_table(moto_client("dynamodb", moto_url), table, EVENTS)
    requests_each = max(1, total // (publishers * per_request))
    work = [
        [
            [
                parse_new_event(signal(), settings.catalog, settings.max_event_bytes)
                for _ in range(per_request)
            ]
            for _ in range(requests_each)
        ]
        for _ in range(publishers)
    ]
    seqs: list[int] = []
    calls: Counter[str] = Counter()
    conflicts = [0]
    lock = threading.Lock()
    ready = threading.Barrier(publishers + 1)

    def publisher(batches: list[list[NewEvent]]) -> None:
        client = moto_client("dynamodb", moto_url)
        mine: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb", lambda model, **_: mine.update([model.name]))
        store = store_class(client, table, settings.streams_by_type, settings.replay_window_seconds)
        ready.wait()
        results = [result for batch in batches for result in publish(store, batch)]
        with lock:
            seqs.extend(result.seq for result in results)
            conflicts[0] += sum(result.conflicts for result in results)
            calls.update(mine)

    threads = [threading.Thread(target=publisher, args=(batches,)) for batches in work]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    stored = len(seqs)
    assert sorted(seqs) == list(range(1, stored + 1)), "sequence has holes or duplicates"
    return {
        "events": stored,
        "events_per_s": round(stored / elapsed, 1),
        "requests_per_event": round(calls.total() / stored, 2),
        "lost_races_per_event": round(conflicts[0] / stored, 2),
        "requests": dict(sorted(calls.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=640, help="events per run, split over the publishers")
    parser.add_argument("--publishers", type=int, nargs="+", default=list(PUBLISHERS), choices=PUBLISHERS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    variants = {
        "shipped": importlib.import_module("streaming.store").EventStore,
        "before": baseline_store_class(),
    }
    moto = subprocess.Popen(
        [sys.executable, "-m", "local.aws", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    figures: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    try:
        assert moto.stdout is not None
        moto_url = moto.stdout.readline().strip()
        print(
            "| store | events/request | publishers | events | events/s | requests/event | lost races/event |"
        )
        print("|---|---|---|---|---|---|---|")
        for per_request in EVENTS_PER_REQUEST:
            for publishers in args.publishers:
                for name, store_class in variants.items():
                    measured = run(moto_url, store_class, publishers, args.events, per_request)
                    figures.setdefault(name, {}).setdefault(str(per_request), {})[str(publishers)] = measured
                    print(
                        f"| {name} | {per_request} | {publishers} | {measured['events']} | "
                        f"{measured['events_per_s']:.0f} | {measured['requests_per_event']:.2f} | "
                        f"{measured['lost_races_per_event']:.2f} |",
                        flush=True,
                    )
    finally:
        moto.terminate()
        moto.wait(timeout=10)
    if args.json:
        args.json.write_text(json.dumps({"store": _report(figures)}, indent=2) + "\n")


def _report(figures: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """Single-event publish requests at the top (the issue's comparison), the rest below."""

    def summary(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            "requests_per_event": {n: run["requests_per_event"] for n, run in runs.items()},
            "events_per_s": {n: run["events_per_s"] for n, run in runs.items()},
            "lost_races_per_event": {n: run["lost_races_per_event"] for n, run in runs.items()},
        }

    return {
        **summary(figures["shipped"]["1"]),
        **(
            {"baseline": {"commit": BASELINE_COMMIT, **summary(figures["before"]["1"])}}
            if "before" in figures
            else {}
        ),
        "by_events_per_request": {
            per_request: {name: summary(figures[name][per_request]) for name in figures}
            for per_request in figures["shipped"]
        },
        "runs": figures,
    }


if __name__ == "__main__":
    main()
