"""`local.serving.serve` stopping on SIGTERM, in a process of its own: a request still unanswered is
answered 503, and an invocation that never ends is abandoned after `RUNNING_SECONDS` rather than
waited for; the process exits with status 0 and no traceback."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import httpx
import pytest

from tests.integration.conftest import until

pytestmark = pytest.mark.faults

# A server whose every request starts an invocation that never ends. It prints its port, then each
# invocation it starts.
SERVER = """
import asyncio, threading
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from local import serving

serving.RUNNING_SECONDS = 1.0  # the test's patience, not the stack's

def invocation():
    print("started", flush=True)
    threading.Event().wait()  # never ends

async def stuck(request):
    await asyncio.to_thread(invocation)
    return PlainTextResponse("never")

sock = serving.listen("127.0.0.1", 0)
print(sock.getsockname()[1], flush=True)
asyncio.run(serving.serve((Starlette(routes=[Route("/", stuck)]), sock)))
"""
WAIT = 60  # seconds: a shared, loaded machine


def test_a_stop_answers_what_is_unanswered_and_abandons_an_invocation_that_never_ends():
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}/"

        async def scenario() -> int:
            assert server.stdout is not None
            async with httpx.AsyncClient(timeout=WAIT) as client:
                request = asyncio.ensure_future(client.get(url))
                assert await asyncio.to_thread(server.stdout.readline) == "started\n"
                server.send_signal(signal.SIGTERM)
                answer = await request
                await until(lambda: server.poll() is not None, WAIT)
                return answer.status_code

        assert asyncio.run(scenario()) == 503
        _, stderr = server.communicate(timeout=WAIT)
        assert server.returncode == 0, stderr
        assert "invocations still running 1 s after the stop were abandoned" in stderr
        assert "Traceback" not in stderr
    finally:
        server.kill()
        server.wait(timeout=WAIT)
