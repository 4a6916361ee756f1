from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# The CDK's jsii runtime prints a banner on Node 20 at import; the Makefile silences it the same way.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
from aws_cdk import App
from aws_cdk.assertions import Template

from app import build_app
from stacks.config import ENVIRONMENTS, load
from tests.infra.templates import OidcInKnownAccount, Stack


class Synthesized:
    def __init__(self, outdir: Path) -> None:
        self.app = build_app(App(outdir=str(outdir)))
        self.assembly = self.app.synth()
        self.outdir = outdir

    def template(self, environment: str) -> dict[str, Any]:
        return self.assembly.get_stack_by_name(load(environment).stack_name).template  # type: ignore[no-any-return]

    def assertions(self, environment: str) -> Template:
        return Template.from_json(self.template(environment))

    def validation_report(self) -> dict[str, Any]:
        return json.loads((self.outdir / "validation-report.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory) -> Synthesized:
    return Synthesized(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(params=ENVIRONMENTS)
def environment(request) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def stack(synthesized, environment) -> Stack:
    return Stack(synthesized.template(environment))


@pytest.fixture(scope="session")
def oidc(tmp_path_factory) -> OidcInKnownAccount:
    return OidcInKnownAccount(tmp_path_factory.mktemp("oidc"))
