"""Local tokens, as the README describes them."""

from __future__ import annotations

from pathlib import Path

import jwt

from local.state import LocalState
from local.token import issue
from stacks.config import load

ROOT = Path(__file__).resolve().parents[2]


def test_readme_says_which_issuer_and_audience_local_tokens_carry_and_the_local_stack_checks(tmp_path):
    claims = jwt.decode(issue(LocalState(tmp_path), "viewer", "alice"), options={"verify_signature": False})
    checked = load("dev").auth_settings("arn:secret")  # the local stack runs the dev configuration
    assert (claims["iss"], claims["aud"]) == (checked.issuer, checked.audience)
    readme = (ROOT / "README.md").read_text()
    assert f"`iss: {checked.issuer}`" in readme and f"`aud: {checked.audience}`" in readme
