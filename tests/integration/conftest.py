from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.aws import moto_client
from local.state import LOCAL_STACK, LocalState

STOP_SECONDS = 30  # from SIGTERM to the local stack's exit


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto (serialized, as in the local stack) in a process of its own, on loopback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "local.aws", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def running_local_stack(directory: Path, *options: str) -> Iterator[LocalState]:
    """`make run` on free loopback ports with its state in `directory`; its output goes to
    `directory/stack.log`, so tests can read what the handlers logged."""
    with local_stack_process(directory, *options) as (_, state):
        yield state


@contextlib.contextmanager
def local_stack_process(directory: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], LocalState]]:
    """`running_local_stack` with its process, for tests that stop it themselves."""
    state = LocalState(directory)
    log = (directory / "stack.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local",
            "--state-dir",
            str(directory),
            "--moto-port",
            "0",
            "--publish-port",
            "0",
            "--websocket-port",
            "0",
            "--sse-port",
            "0",
            "--live-port",
            "0",
            *options,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not state.endpoints_file.exists():
            assert process.poll() is None, (directory / "stack.log").read_text()
            assert time.monotonic() < deadline, "local stack did not start within 60 s"
            time.sleep(0.2)
        # The sockets are listening before the endpoints file is written: no further wait.
        yield process, state
    finally:
        process.terminate()
        try:
            # Its own waits are bounded at about 13 s (local/serving.py: 3 s for the servers, 10 s for
            # invocations still running); a loaded machine adds to that.
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()  # reported by the test that needed it, not by a hang here
            process.wait(timeout=5)
            raise
        finally:
            log.close()


def outputs(state: LocalState) -> dict[str, str]:
    return json.loads(state.endpoints_file.read_text())[LOCAL_STACK]  # type: ignore[no-any-return]


def connection_ids(state: LocalState) -> list[str]:
    """The WebSocket connections the local stack has registered."""
    client = moto_client("dynamodb", outputs(state)["AwsEndpointUrl"])  # needs no credentials set
    items = client.scan(TableName="streaming-local-connections")["Items"]
    return [item["pk"]["S"].split("#", 1)[1] for item in items if item["pk"]["S"].startswith("connection#")]


async def until(condition: Any, seconds: float = 60, *, strict: bool = True) -> None:
    """Wait for `condition`, however loaded the machine; past `seconds`, fail (or, not `strict`,
    return and let the caller's figures say what is missing)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            assert not strict, "gave up waiting"
            return
        await asyncio.sleep(0.05)
