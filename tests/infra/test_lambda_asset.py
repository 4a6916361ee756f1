"""Each handler imports from the built asset, with only what Lambda provides beside it:
the Python runtime (boto3) and the Powertools layer (Powertools, pydantic, fastjsonschema, X-Ray SDK)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

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
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (provided / source.name).symlink_to(source)
    return provided


def test_every_handler_imports_from_the_built_asset(synthesized, environment, tmp_path):
    functions = synthesized.assertions(environment).find_resources("AWS::Lambda::Function")
    handlers = sorted({function["Properties"]["Handler"] for function in functions.values()})
    [asset] = {path for path in synthesized.outdir.glob("asset.*") if (path / "handlers").is_dir()}
    assert not (asset / "tests").exists() and not list(asset.rglob("__pycache__"))
    script = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = [{str(asset)!r}, {str(lambda_provided(tmp_path))!r}]\n"
        "for handler in json.loads(sys.argv[1]):\n"
        "    module, _, name = handler.rpartition('.')\n"
        "    assert callable(getattr(importlib.import_module(module), name)), handler\n"
        "    assert importlib.import_module(module).__file__.startswith(sys.path[0]), handler\n"
        "print('imported', len(json.loads(sys.argv[1])))\n"
    )
    # -I -S: no site-packages, user paths or PYTHONPATH, only the asset and what Lambda provides; -B: no
    # bytecode written into the asset.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", script, json.dumps(handlers)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imported {len(handlers)}"


def test_event_schemas_ship_in_the_asset(synthesized):
    [asset] = {path for path in synthesized.outdir.glob("asset.*") if (path / "handlers").is_dir()}
    shipped = sorted(path.name for path in (asset / "streaming" / "schemas").glob("*.json"))
    source = sorted(
        path.name for path in (Path(__file__).parents[2] / "lambdas/streaming/schemas").glob("*.json")
    )
    assert shipped == source and len(source) == 7
