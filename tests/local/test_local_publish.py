"""`python -m local.publish` on bad input or without a running stack: one line on stderr, exit 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from local.state import LOCAL_STACK, LocalState


def publish(state_dir: Path, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.publish", "--state-dir", str(state_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


def unused_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stopped_stack(tmp_path: Path) -> Path:
    """The state directory of a stack that has stopped: its endpoints file names a closed port."""
    url = f"http://127.0.0.1:{unused_loopback_port()}/"
    LocalState(tmp_path).write_endpoints({"PublishUrl": url, "Region": "us-east-1"})
    return tmp_path


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("local.publish: ")
    for word in words:
        assert word in line, line


@pytest.mark.parametrize(
    ("stdin", "says"),
    [
        ("not json\n", "not JSON"),
        ("", "no input"),
        ("  \n", "no input"),
        ('"signal.created"', "not str"),
        ("42", "not int"),
    ],
)
def test_input_that_is_not_an_event_or_a_list_of_events_is_refused_before_sending(stopped_stack, stdin, says):
    assert_one_line_error(publish(stopped_stack, stdin), says)


def test_without_an_endpoints_file_it_says_to_start_the_stack_and_creates_nothing(tmp_path):
    state_dir = tmp_path / "no-stack-here"
    assert_one_line_error(publish(state_dir, '{"id": "x"}'), "endpoints.json", "make run")
    assert not state_dir.exists()  # no credentials generated in a directory that is not a stack's


def test_a_stack_that_is_not_running_is_one_line_too(stopped_stack):
    url = json.loads((stopped_stack / "endpoints.json").read_text())[LOCAL_STACK]["PublishUrl"]
    assert_one_line_error(publish(stopped_stack, '{"id": "x"}'), "cannot reach", url, "make run")


def test_an_endpoints_file_that_is_not_a_stacks_is_one_line(tmp_path):
    (tmp_path / "endpoints.json").write_text("[]")
    assert_one_line_error(publish(tmp_path, '{"id": "x"}'), "not a local stack's endpoints file")
