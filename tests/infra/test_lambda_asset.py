"""Each handler imports from the built asset, with only what Lambda provides beside it:
the Python runtime (boto3) and the Powertools layer (Powertools, pydantic, fastjsonschema, X-Ray SDK).
The SSE function's handler is a start script: the app it starts imports the same way, and uvicorn from
the asset serves the app's readiness path."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stacks.constructs.sse_stream import READINESS_CHECK_PATH
from streaming import constants as c

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("synth")]

# Top-level modules the runtime and the layer put on sys.path, and what they import in turn.
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
LAYER_MODULES = (
    "aws_lambda_powertools",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "fastjsonschema",
    "aws_xray_sdk",
    "wrapt",
)


def lambda_provided(tmp_path: Path) -> Path:
    """A directory holding exactly the runtime's and the layer's modules, linked from this venv."""
    provided = tmp_path / "provided"
    provided.mkdir()
    for name in RUNTIME_MODULES + LAYER_MODULES:
        link_from_this_venv(name, provided)
    return provided


def link_from_this_venv(module: str, into: Path) -> None:
    """Link this venv's copy of a top-level module (its package directory, or its single file)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    origin = Path(spec.origin)
    source = origin.parent if origin.name == "__init__.py" else origin
    (into / source.name).symlink_to(source)


def compiled_distributions(asset: Path) -> dict[str, tuple[str, set[str]]]:
    """Distributions in the asset that hold compiled modules: name -> (version, top-level modules)."""
    found = {}
    for distribution in importlib.metadata.distributions(path=[str(asset)]):
        compiled = [file for file in distribution.files or () if file.suffix == ".so"]
        if compiled:
            tops = {file.parts[0] if len(file.parts) > 1 else file.name.split(".")[0] for file in compiled}
            found[distribution.metadata["Name"]] = (distribution.version, tops)
    return found


def host_stand_ins(asset: Path, tmp_path: Path) -> Path:
    """Compiled modules in the asset are built for Lambda (arm64, CPython 3.13) and cannot load on
    another machine; stand in this machine's build of the same version, so the import still checks
    everything else the asset ships."""
    stand_ins = tmp_path / "stand-ins"
    stand_ins.mkdir()
    if (platform.machine(), sys.version_info[:2]) == ("aarch64", (3, 13)):
        return stand_ins
    for name, (version, tops) in compiled_distributions(asset).items():
        assert importlib.metadata.version(name) == version, f"this venv needs {name}=={version}"
        for top in tops:
            link_from_this_venv(top, stand_ins)
    return stand_ins


def built_asset(synthesized) -> Path:
    [asset] = {path for path in synthesized.outdir.glob("asset.*") if (path / "handlers").is_dir()}
    return asset


def test_compiled_modules_are_built_for_lambda_arm64(synthesized):
    asset = built_asset(synthesized)
    for library in asset.rglob("*.so"):
        assert library.name.endswith((".cpython-313-aarch64-linux-gnu.so", ".abi3.so")), library.name
        header = library.read_bytes()[:20]
        # ELF, 64-bit, little-endian, e_machine 183 (AArch64)
        assert (header[:4], header[4], header[5], int.from_bytes(header[18:20], "little")) == (
            b"\x7fELF",
            2,
            1,
            183,
        ), library.name


def entry_points(handler: str) -> list[tuple[str, str]]:
    """(module, attribute) a handler needs: module.function, or for the SSE start script the ASGI app it
    starts and uvicorn's entry point, which the script runs as `python -m uvicorn`."""
    if handler == c.SSE_START_SCRIPT:
        module, _, app = c.SSE_APP.partition(":")
        return [(module, app), ("uvicorn.main", "main")]
    module, _, name = handler.rpartition(".")
    return [(module, name)]


def test_every_handler_imports_from_the_built_asset(synthesized, environment, tmp_path):
    functions = synthesized.assertions(environment).find_resources("AWS::Lambda::Function")
    handlers = sorted({function["Properties"]["Handler"] for function in functions.values()})
    assert c.SSE_START_SCRIPT in handlers
    entries = sorted({entry for handler in handlers for entry in entry_points(handler)})
    asset = built_asset(synthesized)
    assert not (asset / "tests").exists() and not list(asset.rglob("__pycache__"))
    search_path = [str(host_stand_ins(asset, tmp_path)), str(asset), str(lambda_provided(tmp_path))]
    script = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {search_path!r}\n"
        "for module, name in json.loads(sys.argv[1]):\n"
        "    assert callable(getattr(importlib.import_module(module), name)), (module, name)\n"
        f"    assert importlib.import_module(module).__file__.startswith({str(asset)!r}), module\n"
        "print('imported', len(json.loads(sys.argv[1])))\n"
    )
    # -I -S: no site-packages, user paths or PYTHONPATH, only the asset (with stand-ins for its compiled
    # modules) and what Lambda provides; -B: no bytecode written into the asset.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", script, json.dumps(entries)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imported {len(entries)}"


def test_the_sse_start_script_ships_executable_and_starts_the_app(synthesized):
    asset = built_asset(synthesized)
    start_script = asset / c.SSE_START_SCRIPT
    # Lambda runs the handler script as another user than the one who built the asset: executable by all.
    mode = stat.S_IMODE(start_script.stat().st_mode)
    assert mode & 0o555 == 0o555, oct(mode)
    text = start_script.read_text()
    assert text.startswith("#!/bin/")
    assert c.SSE_APP in text and "uvicorn" in text and "PORT" in text
    # pip's console scripts name this machine's interpreter; they are not shipped.
    assert not (asset / "bin").exists()


def test_uvicorn_from_the_asset_serves_the_readiness_path(synthesized, tmp_path):
    """What the adapter polls before it passes on the first request: GET /healthz on the app's port.
    Loopback only; the server is stopped at the end."""
    asset = built_asset(synthesized)
    search_path = [str(host_stand_ins(asset, tmp_path)), str(asset), str(lambda_provided(tmp_path))]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = (
        "import sys\n"
        f"sys.path[:0] = {search_path!r}\n"
        "import uvicorn\n"
        f"uvicorn.run({c.SSE_APP!r}, host='127.0.0.1', port={port}, log_level='warning')\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-I", "-S", "-B", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        deadline, answer = time.monotonic() + 30, None
        while answer is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}{READINESS_CHECK_PATH}", timeout=2
                ) as response:
                    answer = (response.status, response.read())
            except urllib.error.HTTPError as refused:  # serving, but not the readiness path
                answer = (refused.code, b"")
            except OSError:  # not listening yet
                time.sleep(0.2)
    finally:
        server.terminate()
        try:
            _, stderr = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
    assert answer is not None and answer[0] == 200, stderr


def test_pyjwt_in_the_asset_verifies_oidc_signatures(synthesized, tmp_path):
    """RS256/ES256 need cryptography; without it PyJWT imports fine and refuses every OIDC token."""
    asset = built_asset(synthesized)
    assert "cryptography" in compiled_distributions(asset)
    search_path = [str(host_stand_ins(asset, tmp_path)), str(asset), str(lambda_provided(tmp_path))]
    script = (
        "import sys\n"
        f"sys.path[:0] = {search_path!r}\n"
        "from jwt.algorithms import get_default_algorithms\n"
        "print(sorted({'RS256', 'ES256'} & set(get_default_algorithms())))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['ES256', 'RS256']"


def test_event_schemas_ship_in_the_asset(synthesized):
    asset = built_asset(synthesized)
    shipped = sorted(path.name for path in (asset / "streaming" / "schemas").glob("*.json"))
    source = sorted(
        path.name for path in (Path(__file__).parents[2] / "lambdas/streaming/schemas").glob("*.json")
    )
    assert shipped == source and len(source) == 7
