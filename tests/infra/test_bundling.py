"""Runtime dependencies are installed for the Lambda platform (arm64, CPython 3.13), not this machine's."""

from __future__ import annotations

import pytest

from stacks.constructs.lambda_code import LAMBDA_SOURCE, PACKAGES, build_asset

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


def test_the_shipped_requirements_file_pins_every_line():
    lines = [line.strip() for line in (LAMBDA_SOURCE / "requirements.txt").read_text().splitlines()]
    assert all("==" in line for line in lines if line and not line.startswith("#"))
