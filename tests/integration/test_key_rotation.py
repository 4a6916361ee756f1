"""`make rotate-key ENV=local` against `make run`'s stack: tokens minted locally (`make token`, the live
page's /local/token) follow the current key, and both transports verify the new key at once and the
previous one through the overlap. Refusal after `retire` waits on the verifiers' secret cache (five
minutes), so it is shown on moto with that cache cleared (tests/unit/test_rotate_key.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import jwt
import pytest
import websockets

from local.state import LOCAL_STACK, LocalState
from local.token import issue
from streaming.hs256 import INITIAL_KID
from tests.integration.conftest import outputs, running_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.connections, pytest.mark.xdist_group("local-stack")]
TIMEOUT = 20


def rotate_key(state: LocalState, action: str) -> str:
    """The command `make rotate-key ENV=local ACTION=...` runs."""
    command = [sys.executable, "-m", "tools.rotate_key", action, "--outputs", str(state.endpoints_file)]
    done = subprocess.run(
        [*command, "--stack", LOCAL_STACK], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def websocket_accepts(state: LocalState, token: str) -> bool:
    async def ping() -> bool:
        url = outputs(state)["WebSocketUrl"]
        async with websockets.connect(url, subprotocols=["streaming.v1", f"token.{token}"]) as ws:
            await ws.send(json.dumps({"action": "ping"}))
            async with asyncio.timeout(TIMEOUT):
                while json.loads(await ws.recv())["type"] != "pong":
                    pass
        return True

    try:
        return asyncio.run(ping())
    except websockets.InvalidStatus:
        return False


def sse_accepts(state: LocalState, token: str) -> bool:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", outputs(state)["SseUrl"] + "events", headers=headers, timeout=TIMEOUT) as answer:
        return answer.status_code == 200


def test_local_tokens_follow_the_rotation_and_both_keys_verify_during_the_overlap(tmp_path):
    with running_local_stack(tmp_path) as state:
        before = issue(state, "viewer", "rotation-before")
        assert kid(before) == INITIAL_KID
        assert websocket_accepts(state, before) and sse_accepts(state, before)  # both verifiers cache the key

        printed = rotate_key(state, "rotate")
        after = issue(state, "viewer", "rotation-after")
        assert (
            kid(after) != INITIAL_KID
            and f"signing with {kid(after)}; also verifying: {INITIAL_KID}" in printed
        )
        page = outputs(state)["LivePageUrl"].removesuffix("live/")
        from_page = httpx.get(f"{page}local/token", params={"role": "viewer"}, timeout=TIMEOUT).json()[
            "token"
        ]
        assert kid(from_page) == kid(after)

        # A key the verifiers have not seen yet: they reread the secret at once.
        assert websocket_accepts(state, after) and sse_accepts(state, after)
        assert websocket_accepts(state, before) and sse_accepts(state, before)

        assert "also verifying: none" in rotate_key(state, "retire")
        assert kid(issue(state, "viewer", "rotation-later")) == kid(after)
        assert after not in (state.directory / "stack.log").read_text()
