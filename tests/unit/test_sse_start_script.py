"""The SSE function's start script, run as the Lambda Web Adapter runs it: from the function's code
directory, with its own PYTHONPATH, serving the readiness path on $PORT. Loopback only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streaming import constants as c

pytestmark = pytest.mark.connections
LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"


def test_the_start_script_serves_the_app_from_the_task_root(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "LAMBDA_TASK_ROOT": str(LAMBDAS),
        "PORT": str(port),
        "HOME": str(tmp_path),
    }
    # Started elsewhere, as the adapter does: the script must find its code by itself.
    server = subprocess.Popen(
        ["sh", str(LAMBDAS / c.SSE_START_SCRIPT)], cwd=tmp_path, env=environment, stderr=subprocess.PIPE
    )
    try:
        deadline, status = time.monotonic() + 30, None
        while status is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    status = response.status
            except OSError:
                time.sleep(0.2)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    assert status == 200, stderr
