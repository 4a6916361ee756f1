"""Who may connect: a valid token on either transport, and nobody without one or with a forged one.
Publishing takes an AWS signature (SigV4): an unsigned request is refused."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import signal
from tests.contract.target import TIMEOUT, Target, receive, send

pytestmark = [pytest.mark.contract, pytest.mark.connections, pytest.mark.xdist_group("local-stack")]
ROLE = "viewer"


def forged(token: str) -> str:
    """The token with another signature of the same length: what a forger without the key sends."""
    header, claims, signature = token.split(".")
    other = base64.urlsafe_b64encode(
        bytes(b ^ 0x5A for b in base64.urlsafe_b64decode(signature + "=="))
    ).rstrip(b"=")
    return f"{header}.{claims}.{other.decode()}"


def test_a_valid_token_connects_over_websocket_and_is_welcomed_with_its_role(target: Target):
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with await target.websocket(ROLE) as ws:
            await send(ws, action="ping", id="contract")
            welcome = await receive(ws, lambda message: message["type"] == "welcome")
            return welcome, await receive(ws, lambda message: message["type"] == "pong")

    welcome, pong = asyncio.run(scenario())
    assert (welcome["role"], pong["id"]) == (ROLE, "contract")
    assert "signal.created" in welcome["allowed_types"]


@pytest.mark.parametrize("case", ["no token", "forged signature"])
def test_a_websocket_without_a_valid_token_is_refused_at_the_handshake(target: Target, case):
    token = "" if case == "no token" else forged(target.tokens.token(ROLE))
    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(target.websocket(ROLE, token=token))
    assert refused.value.response.status_code in (401, 403)


@pytest.mark.parametrize("case", ["no token", "forged signature"])
def test_an_sse_stream_without_a_valid_token_is_refused_with_invalid_token(target: Target, case):
    headers = {} if case == "no token" else {"Authorization": f"Bearer {forged(target.tokens.token(ROLE))}"}
    answer = httpx.get(target.sse_url, headers=headers, timeout=TIMEOUT)
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "invalid_token")


def test_an_unsigned_publish_is_forbidden_and_stores_nothing(target: Target):
    event = signal()
    answer = httpx.post(target.outputs["PublishUrl"].rstrip("/") + "/events", json=event, timeout=TIMEOUT)
    assert answer.status_code == 403
    assert target.publisher.publish(event)["duplicate"] is False  # the refused one was not stored
