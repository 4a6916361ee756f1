"""The browser client's logic (clients/web/streaming.js) and the live page's list model
(clients/web/live/clusters.js), tested in Node with its built-in test runner (node --test)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "clients" / "web"


def test_the_web_client_logic_passes_its_node_tests():
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is not installed: `make install` installs it (the CDK CLI needs it too)")
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", "test/"],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(result.stdout[-20_000:], result.stderr[-5_000:])
    assert result.returncode == 0, "node --test failed (output above)"
    assert "# fail 0" in result.stdout or "\u2139 fail 0" in result.stdout
