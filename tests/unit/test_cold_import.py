"""Each function's cold start loads its own part only: importing a handler module in a fresh interpreter,
in the environment the cold-import benchmark uses (Lambda's paths: the tracer on, its modules patched),
leaves out the modules only other functions use. Module names, not times: no timed assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench import cold_import

ROOT = Path(__file__).resolve().parents[2]

# Loaded by no handler on import: on first use (PyJWT with the first token, which imports
# cryptography), or never (pydantic; the libraries the X-Ray SDK would patch were they imported).
NOWHERE = ("jwt", "cryptography", "pydantic", "requests", "httpx", "sqlite3")
# The domain's big parts, each left out where the function never uses it.
STORE, FANOUT, PUBLISH = "streaming.store", "streaming.fanout", "streaming.publish"
SESSION, REGISTRY = "streaming.session", "streaming.connections"
PUSH = ("streaming.listeners", "websockets", "h11")
NOT_LOADED = {
    "handlers.ws_authorizer": (STORE, FANOUT, PUBLISH, SESSION, REGISTRY, *PUSH),
    "handlers.ws_sweeper": (STORE, FANOUT, PUBLISH, *PUSH),
    "handlers.websocket": (FANOUT, PUBLISH, *PUSH),
    "handlers.fanout_worker": (PUBLISH, SESSION, *PUSH),
    "handlers.publish_http": (SESSION, *PUSH),
    "handlers.publish_eventbridge": (SESSION, "aws_lambda_powertools.utilities.data_classes", *PUSH),
    "handlers.probe": (STORE, FANOUT, PUBLISH, SESSION, REGISTRY),
    "sse.app": (FANOUT, PUBLISH, SESSION),  # streams are pushed (sse.push): websockets is its own
}
_LOADED = "import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"


def loaded_by_import(module: str, task_root: Path) -> set[str]:
    environment = cold_import.lambda_environment(str(task_root))
    result = subprocess.run(
        [sys.executable, "-c", _LOADED.format(module=module)],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(result.stdout))


def test_every_benchmarked_module_has_its_list():
    assert set(NOT_LOADED) == set(cold_import.MODULES)


@pytest.mark.parametrize("module", sorted(NOT_LOADED))
def test_a_handler_import_leaves_out_what_only_other_functions_use(module, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the benchmark's environment puts lambdas/ on the path from here
    loaded = loaded_by_import(module, tmp_path)
    assert {module, "boto3", "aws_xray_sdk"} <= loaded  # imported, in Lambda's environment (tracer on)
    assert sorted(name for name in (*NOWHERE, *NOT_LOADED[module]) if name in loaded) == []
