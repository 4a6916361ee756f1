"""`make bench` (quick, under 5 minutes here) and `make bench-full`: every benchmark of tests/bench/ in
turn, each with `--json`, merged into docs/performance.json with the cost model, the machine, the
commit and the commands, then rendered into docs/performance.md and docs/images/ (tests/bench/report.py).

    .venv/bin/python -m tests.bench.run [--full] [--only websocket_latency cold_import]

A benchmark whose module is missing or has no `--json` flag yet is skipped, and the report says so;
one that fails is reported and the others still run. Loopback only, like each benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tests.bench import report

# Module (in tests/bench/) -> its arguments at each scale; all are bounded by the scripts themselves.
BENCHES: dict[str, dict[str, list[str]]] = {
    # quick: each of 8 publishers sends 3 requests of 10 events (with one, they all collide at once)
    "store_throughput": {"quick": ["--events", "240", "--publishers", "1", "8"], "full": []},
    "fanout_throughput": {"quick": ["--repeat", "1"], "full": []},
    "adaptive_batching": {"quick": ["--seconds", "1"], "full": ["--connections", "100", "--seconds", "5"]},
    "publish_batching": {"quick": ["--rates", "100", "--seconds", "2"], "full": []},
    "store_round_trips": {"quick": ["--requests", "30"], "full": []},
    "websocket_latency": {
        "quick": ["--connections", "100", "1000", "--events", "10"],
        "full": ["--connections", "10", "100", "300", "1000", "--events", "20"],
    },
    "sse_latency": {"quick": ["--seconds", "15", "--events", "10"], "full": ["--seconds", "60"]},
    "cold_import": {"quick": ["--repeat", "3"], "full": ["--repeat", "9"]},
}
TIMEOUT_SECONDS = {"quick": 600, "full": 1800}  # one benchmark, at most
ROOT = Path(__file__).resolve().parents[2]


def skip_reason(module: str) -> str | None:
    """Why `module` cannot be run with --json on this branch, or None if it can."""
    if find_spec(module) is None:
        return "not on this branch"
    usage = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if usage.returncode != 0:
        return f"--help failed: {(usage.stderr.strip().splitlines() or ['?'])[-1]}"
    return None if "--json" in usage.stdout else "has no --json flag yet"


def merge(into: MutableMapping[str, Any], part: Mapping[str, Any]) -> MutableMapping[str, Any]:
    """`part` merged into `into`, nested mappings key by key (two benchmarks may fill one section)."""
    for key, value in part.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), MutableMapping):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    dirty = any(not line.endswith(("performance.json", "performance.md", ".png")) for line in git(
        "status", "--porcelain", "--untracked-files=no").splitlines())  # fmt: skip
    return git("rev-parse", "--short=12", "HEAD") + ("+uncommitted changes" if dirty else "")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": f"Python {platform.python_version()}",
        "platform": platform.platform(),
        "load_before": [round(load, 2) for load in os.getloadavg()],
    }


def run(scale: str, names: Sequence[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {"scale": scale, "commit": commit(), "machine": machine(), "commands": []}
    figures["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    skipped, failed = {}, {}
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            module = f"tests.bench.{name}"
            if reason := skip_reason(module):
                print(f"--- {name}: skipped, {reason}", flush=True)
                skipped[name] = reason
                continue
            output = Path(directory) / f"{name}.json"
            command = [sys.executable, "-m", module, *BENCHES[name][scale], "--json", str(output)]
            shown = " ".join([".venv/bin/python", *command[1:-1], "PATH"])
            print(f"--- {shown}", flush=True)
            started = time.monotonic()
            try:
                subprocess.run(command, check=True, timeout=TIMEOUT_SECONDS[scale])
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
                failed[name] = str(error).replace(directory, "...")
                continue
            merge(figures, json.loads(output.read_text()))
            figures["commands"].append(f"{shown} ({time.monotonic() - started:.0f} s)")
    figures["machine"]["load_after"] = [round(load, 2) for load in os.getloadavg()]
    figures["cost"] = report.cost(figures)
    figures["skipped"] = {**skipped, **{name: f"failed: {why}" for name, why in failed.items()}}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the full scale (make bench-full)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--docs", type=Path, default=report.DOCS, help="where performance.md and .json are")
    args = parser.parse_args()
    figures = run("full" if args.full else "quick", args.only)
    (args.docs / "performance.json").write_text(json.dumps(figures, indent=2) + "\n")
    report.write(figures, args.docs)
    print(report.markdown(figures))
    if figures["skipped"]:
        print(f"skipped or failed: {', '.join(figures['skipped'])}", file=sys.stderr)


if __name__ == "__main__":
    main()
