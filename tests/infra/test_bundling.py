"""Runtime dependencies are installed for the Lambda platform (arm64, CPython 3.13), not this machine's."""

from __future__ import annotations

import re
import stat

import pytest

from stacks.config import ROOT
from stacks.constructs.lambda_code import LAMBDA_SOURCE, PACKAGES, build_asset
from streaming.constants import SSE_START_SCRIPT

pytestmark = pytest.mark.infra


def test_requirements_are_installed_as_linux_arm64_cpython_313_wheels(tmp_path):
    source = tmp_path / "lambdas"
    for package in PACKAGES:
        (source / package).mkdir(parents=True)
        (source / package / "__init__.py").write_text("")
    # A package with compiled wheels per platform shows which platform pip picked.
    (source / "requirements.txt").write_text("# comment lines are fine\nPyYAML==6.0.3\n")
    output = tmp_path / "asset"
    build_asset(output, source)
    [extension] = list((output / "yaml").glob("_yaml*.so"))
    assert "cpython-313-aarch64-linux-gnu" in extension.name
    assert (output / "handlers" / "__init__.py").exists()


def test_packages_are_copied_with_their_modes_so_the_start_script_stays_executable(tmp_path):
    source = tmp_path / "lambdas"
    for package in PACKAGES:
        (source / package).mkdir(parents=True)
        (source / package / "__init__.py").write_text("")
        (source / package / "__init__.py").chmod(0o644)
    assert SSE_START_SCRIPT == "sse/run.sh" and "sse" in PACKAGES
    (source / SSE_START_SCRIPT).write_text("#!/bin/sh\nexec true\n")
    (source / SSE_START_SCRIPT).chmod(0o755)
    (source / "requirements.txt").write_text("# nothing to install\n")
    output = tmp_path / "asset"
    build_asset(output, source)
    assert stat.S_IMODE((output / SSE_START_SCRIPT).stat().st_mode) == 0o755
    assert stat.S_IMODE((output / "sse" / "__init__.py").stat().st_mode) == 0o644


def test_the_shipped_requirements_file_pins_every_line():
    lines = [line.strip() for line in (LAMBDA_SOURCE / "requirements.txt").read_text().splitlines()]
    assert all("==" in line for line in lines if line and not line.startswith("#"))


def pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` line, names normalized as pip does."""
    found = {}
    for line in text.splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.strip().partition("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_shipped_pins_match_the_constraints_this_venv_was_built_with():
    """The asset import test stands this venv's compiled builds in for the asset's, and runs the asset's
    pure-Python packages against this venv's tests: the versions must be the same."""
    shipped = pins((LAMBDA_SOURCE / "requirements.txt").read_text())
    constraints = pins((ROOT / "constraints.txt").read_text())
    assert {"uvicorn", "starlette", "anyio", "h11", "click", "idna", "typing-extensions"} <= set(shipped)
    assert {name: constraints.get(name) for name in shipped} == shipped
