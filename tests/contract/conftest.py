"""The stack the contract suite checks: the one named by `--outputs-file` (`make contract
OUTPUTS=...`), or else a local stack started for it, reached through its endpoints file exactly as a
deployed stack is through its outputs file, with tokens from a command (`python -m local.token`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.credentials import Credentials

from tests.contract.target import Target, TokenSource
from tests.integration.conftest import running_local_stack

USER_CREDENTIALS = pytest.StashKey[Credentials]()
USER_ENVIRONMENT = pytest.StashKey[dict[str, str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("contract", "the contract suite's target (docs/contract.md)")
    group.addoption(
        "--outputs-file",
        type=Path,
        help="a deployed stack's `cdk deploy --outputs-file` file: the suite sends traffic there",
    )
    group.addoption("--stack", help="the stack in the outputs file, if it holds more than one")


def pytest_configure(config: pytest.Config) -> None:
    """A named stack is published to with the user's AWS credentials, and the token command runs in the
    user's environment: both taken here, before the test session replaces the AWS credentials in the
    environment with fake ones (tests/conftest.py)."""
    if config.getoption("--outputs-file", default=None) is not None:
        import boto3

        config.stash[USER_ENVIRONMENT] = dict(os.environ)
        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise pytest.UsageError("no AWS credentials to sign publish requests with (AWS_PROFILE, ...)")
        config.stash[USER_CREDENTIALS] = credentials


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    # Options this conftest adds exist only when pytest is started on tests/contract: `make test` never
    # names a remote stack.
    named = request.config.getoption("--outputs-file", default=None)
    if named is not None:
        yield Target.load(
            named,
            TokenSource.from_environment(request.config.stash[USER_ENVIRONMENT]),
            stack=request.config.getoption("--stack", default=None),
            remote_allowed=True,
            credentials=request.config.stash[USER_CREDENTIALS],
        )
        return
    directory = tmp_path_factory.mktemp("contract")
    with running_local_stack(directory) as state:
        # What a user of the local stack does: `make token` for tokens, the local publisher identity.
        command = [
            sys.executable,
            "-m",
            "local.token",
            "--state-dir",
            str(directory),
            "--sub",
            "contract",
            "--role",
        ]
        creds = state.credentials()
        yield Target.load(
            state.endpoints_file,
            TokenSource(command),
            credentials=Credentials(creds.access_key_id, creds.secret_access_key),
        )
