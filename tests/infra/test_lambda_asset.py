"""Each handler imports from the built asset, with only what Lambda provides beside it:
the Python runtime (boto3) and the Powertools layer (Powertools, pydantic, fastjsonschema, X-Ray SDK)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
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
            spec = importlib.util.find_spec(top)
            assert spec is not None and spec.origin is not None, top
            origin = Path(spec.origin)
            source = origin.parent if origin.name == "__init__.py" else origin
            (stand_ins / source.name).symlink_to(source)
    return stand_ins


def test_compiled_modules_are_built_for_lambda_arm64(synthesized):
    [asset] = {path for path in synthesized.outdir.glob("asset.*") if (path / "handlers").is_dir()}
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


def test_every_handler_imports_from_the_built_asset(synthesized, environment, tmp_path):
    functions = synthesized.assertions(environment).find_resources("AWS::Lambda::Function")
    handlers = sorted({function["Properties"]["Handler"] for function in functions.values()})
    [asset] = {path for path in synthesized.outdir.glob("asset.*") if (path / "handlers").is_dir()}
    assert not (asset / "tests").exists() and not list(asset.rglob("__pycache__"))
    search_path = [str(host_stand_ins(asset, tmp_path)), str(asset), str(lambda_provided(tmp_path))]
    script = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {search_path!r}\n"
        "for handler in json.loads(sys.argv[1]):\n"
        "    module, _, name = handler.rpartition('.')\n"
        "    assert callable(getattr(importlib.import_module(module), name)), handler\n"
        f"    assert importlib.import_module(module).__file__.startswith({str(asset)!r}), handler\n"
        "print('imported', len(json.loads(sys.argv[1])))\n"
    )
    # -I -S: no site-packages, user paths or PYTHONPATH, only the asset (with stand-ins for its compiled
    # modules) and what Lambda provides; -B: no bytecode written into the asset.
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", script, json.dumps(handlers)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imported {len(handlers)}"


def test_pyjwt_in_the_asset_verifies_oidc_signatures(synthesized, tmp_path):
    """RS256/ES256 need cryptography; without it PyJWT imports fine and refuses every OIDC token."""
    [asset] = {path for path in synthesized.outdir.glob("asset.*") if (path / "handlers").is_dir()}
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
    [asset] = {path for path in synthesized.outdir.glob("asset.*") if (path / "handlers").is_dir()}
    shipped = sorted(path.name for path in (asset / "streaming" / "schemas").glob("*.json"))
    source = sorted(
        path.name for path in (Path(__file__).parents[2] / "lambdas/streaming/schemas").glob("*.json")
    )
    assert shipped == source and len(source) == 7
