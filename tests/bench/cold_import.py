"""Cold import: the time each Lambda handler module (and the SSE app) takes to import in a fresh
interpreter, against a bare `import boto3`, which every function pays anyway.

Each measurement is a new interpreter that times one `import` from inside (interpreter start-up is
not counted), in an environment like Lambda's: `LAMBDA_TASK_ROOT` set, so the X-Ray SDK takes its
Lambda path and Powertools enables the tracer and patches modules as it does when deployed. The
modules are measured round-robin, so a busy moment of the machine spreads over all of them; the
median of `--repeat` runs is reported. Local only, bounded by the number of runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BASELINE = "boto3"
MODULES = (
    "handlers.websocket",
    "handlers.ws_authorizer",
    "handlers.ws_sweeper",
    "handlers.publish_http",
    "handlers.publish_eventbridge",
    "handlers.fanout_worker",
    "handlers.probe",
    "sse.app",
)
_TIMED_IMPORT = (
    "import time; started = time.process_time(); import {module}; "
    "print((time.process_time() - started) * 1000)"
)


def import_ms(module: str, environment: dict[str, str]) -> float:
    """One import of `module` in a fresh interpreter, in milliseconds."""
    result = subprocess.run(
        [sys.executable, "-c", _TIMED_IMPORT.format(module=module)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(result.stdout.strip())


def lambda_environment(task_root: str) -> dict[str, str]:
    """This process's environment, with what Lambda sets that changes what the modules import, and
    bytecode written: without it (PYTHONDONTWRITEBYTECODE set where the benchmark runs) every run would
    compile the project's modules from source, and not boto3's, whose .pyc files pip wrote."""
    return {
        **{name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": os.pathsep.join([str(Path("lambdas").resolve()), str(Path().resolve())]),
        "LAMBDA_TASK_ROOT": task_root,
        "AWS_LAMBDA_FUNCTION_NAME": "cold-import-bench",
        "AWS_REGION": "us-east-1",
    }


def measure(repeat: int, modules: tuple[str, ...] = MODULES) -> dict[str, Any]:
    """{"boto3": ms, "handlers": {module: ms}, "worst": module, "ratio_vs_boto3": worst / boto3}."""
    with tempfile.TemporaryDirectory() as task_root:
        environment = lambda_environment(task_root)
        runs: dict[str, list[float]] = {module: [] for module in (BASELINE, *modules)}
        for module in runs:  # once each, not counted: .pyc files written, the page cache warm
            import_ms(module, environment)
        for _ in range(repeat):
            for module in runs:
                runs[module].append(import_ms(module, environment))
    medians = {module: round(statistics.median(times), 1) for module, times in runs.items()}
    boto3 = medians.pop(BASELINE)
    worst = max(medians, key=medians.__getitem__)
    return {
        "boto3": boto3,
        "handlers": medians,
        "worst": worst,
        "ratio_vs_boto3": round(medians[worst] / boto3, 2),
        "runs": repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each module; the median is kept")
    parser.add_argument("--json", type=Path, help="also write the figures here, as {'cold_import': ...}")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 50:
        parser.error("keep the benchmark bounded: 1 to 50 runs")
    figures = measure(args.repeat)
    print(f"median of {args.repeat} fresh interpreters each, {os.cpu_count()} cores, Lambda-like environment")
    print("| module | import ms | x boto3 |")
    print("|---|---|---|")
    print(f"| `import boto3` | {figures['boto3']:.1f} | 1.00 |")
    for module, ms in figures["handlers"].items():
        print(f"| `{module}` | {ms:.1f} | {ms / figures['boto3']:.2f} |")
    print(f"worst: {figures['worst']}, {figures['ratio_vs_boto3']:.2f}x boto3")
    if args.json:
        args.json.write_text(json.dumps({"cold_import": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
