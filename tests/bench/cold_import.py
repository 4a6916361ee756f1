"""Cold import: the time each Lambda handler module (and the SSE app) takes to import in a fresh
interpreter, against a bare `import boto3`, which every function pays anyway.

Each measurement is a new interpreter that times one `import` from inside (interpreter start-up is
not counted), in an environment like Lambda's: `LAMBDA_TASK_ROOT` set, so the X-Ray SDK takes its
Lambda path and Powertools enables the tracer and patches modules as it does when deployed. The
modules are measured round-robin, so a busy moment of the machine spreads over all of them; the
median of `--repeat` runs is reported. With `--against DIR` (another checkout, e.g. `git worktree add
/tmp/before main`) its modules are measured in the same rounds, alternating with this checkout's, so a
before/after comparison sees the same load. Local only, bounded by the number of runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
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


def lambda_environment(task_root: str, checkout: Path = Path()) -> dict[str, str]:
    """This process's environment, with what Lambda sets that changes what the modules import, and
    bytecode written: without it (PYTHONDONTWRITEBYTECODE set where the benchmark runs) every run would
    compile the project's modules from source, and not boto3's, whose .pyc files pip wrote."""
    return {
        **{name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": os.pathsep.join([str((checkout / "lambdas").resolve()), str(checkout.resolve())]),
        "LAMBDA_TASK_ROOT": task_root,
        "AWS_LAMBDA_FUNCTION_NAME": "cold-import-bench",
        "AWS_REGION": "us-east-1",
    }


def measure(repeat: int, modules: tuple[str, ...] = MODULES) -> dict[str, Any]:
    """{"boto3": ms, "handlers": {module: ms}, "worst": module, "ratio_vs_boto3": worst / boto3}."""
    [figures] = measure_checkouts(repeat, [Path()], modules)
    return figures


def measure_checkouts(
    repeat: int, checkouts: Sequence[Path], modules: tuple[str, ...] = MODULES
) -> list[dict[str, Any]]:
    """`measure`'s figures for each checkout, its runs alternating with the others' module by module."""
    with tempfile.TemporaryDirectory() as task_root:
        environments = [lambda_environment(task_root, checkout) for checkout in checkouts]
        names = (BASELINE, *modules)
        runs: list[dict[str, list[float]]] = [{name: [] for name in names} for _ in checkouts]
        for module in names:  # once each, not counted: .pyc files written, the page cache warm
            for environment in environments:
                import_ms(module, environment)
        for _ in range(repeat):
            for module in names:
                for environment, times in zip(environments, runs, strict=True):
                    times[module].append(import_ms(module, environment))
    return [_figures(times, repeat) for times in runs]


def _figures(runs: dict[str, list[float]], repeat: int) -> dict[str, Any]:
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
    parser.add_argument("--against", type=Path, help="another checkout, measured in the same rounds")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 50:
        parser.error("keep the benchmark bounded: 1 to 50 runs")
    if args.against and not (args.against / "lambdas" / "handlers").is_dir():
        parser.error(f"{args.against} is not a checkout of this project")
    checkouts = [Path(), *([args.against] if args.against else [])]
    measured = measure_checkouts(args.repeat, checkouts)
    figures = measured[0]
    print(f"median of {args.repeat} fresh interpreters each, {os.cpu_count()} cores, Lambda-like environment")
    print("| module |" + "".join(f" `{checkout}` ms | x boto3 |" for checkout in checkouts))
    print("|---|" + "---|---|" * len(checkouts))
    print("| `import boto3` |" + "".join(_cell(each["boto3"], each["boto3"]) for each in measured))
    for module in figures["handlers"]:
        row = (_cell(each["handlers"][module], each["boto3"]) for each in measured)
        print(f"| `{module}` |" + "".join(row))
    for checkout, each in zip(checkouts, measured, strict=True):
        print(f"`{checkout}` worst: {each['worst']}, {each['ratio_vs_boto3']:.2f}x boto3")
    if args.json:
        args.json.write_text(json.dumps({"cold_import": figures}, indent=2) + "\n")


def _cell(ms: float, boto3: float) -> str:
    return f" {ms:.1f} | {ms / boto3:.2f} |"


if __name__ == "__main__":
    main()
