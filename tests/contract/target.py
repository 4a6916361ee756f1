"""What the contract suite knows of the stack it checks: its outputs file (a `cdk deploy --outputs-file`
file or the local stack's endpoints.json, `{stack: {output key: value}}`) and where its tokens come from.
Nothing else: the same tests run against the local stack and a deployed one (docs/contract.md)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websockets
from botocore.credentials import Credentials
from websockets.asyncio.client import ClientConnection

from clients.publisher import PublishClient
from streaming import constants as c

TOKEN_VARIABLE = "STREAMING_TOKEN_{role}"
TOKEN_COMMAND_VARIABLE = "STREAMING_TOKEN_COMMAND"
URL_OUTPUTS = (c.OUTPUT_PUBLISH_URL, c.OUTPUT_WEBSOCKET_URL, c.OUTPUT_SSE_URL)
TIMEOUT = 30  # seconds any one expected message may take: a deployed stack is further away


class NotLoopback(RuntimeError):
    """A URL the suite may not send traffic to: only a stack named explicitly may be remote."""


@dataclass
class TokenSource:
    """A token for a role: `STREAMING_TOKEN_<ROLE>` in `environ` if set, else what `command <role>`
    prints, run in `environ` (or in this process's environment if it is empty)."""

    command: Sequence[str] = ()
    environ: Mapping[str, str] = field(default_factory=dict)
    _issued: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> TokenSource:
        return cls(shlex.split(environ.get(TOKEN_COMMAND_VARIABLE, "")), environ)

    def token(self, role: str) -> str:
        if role not in self._issued:
            self._issued[role] = self._fetch(role)
        return self._issued[role]

    def _fetch(self, role: str) -> str:
        variable = TOKEN_VARIABLE.format(role=role.upper())
        if self.environ.get(variable):
            return self.environ[variable].strip()
        if not self.command:
            raise LookupError(f"no token for role {role!r}: set {variable} or {TOKEN_COMMAND_VARIABLE}")
        printed = subprocess.run(
            [*self.command, role],
            env=dict(self.environ) or None,  # the user's, as it was before the tests replaced anything
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return printed.stdout.strip()


@dataclass
class Target:
    stack: str
    outputs: Mapping[str, str]
    tokens: TokenSource
    publisher: PublishClient

    @classmethod
    def load(
        cls,
        outputs_file: Path,
        tokens: TokenSource,
        *,
        stack: str | None = None,
        remote_allowed: bool = False,
        credentials: Credentials | None = None,
    ) -> Target:
        """The stack in `outputs_file` (`stack`, or the only one there). Unless `remote_allowed`
        (the user named this file), every URL must be on loopback."""
        stacks: dict[str, dict[str, str]] = json.loads(outputs_file.read_text())
        if stack is None and len(stacks) != 1:
            raise ValueError(f"{outputs_file} holds {sorted(stacks)}: name one with --stack")
        name = stack or next(iter(stacks))
        if name not in stacks:
            raise ValueError(f"{outputs_file} has no stack {name!r}; it has {sorted(stacks)}")
        outputs = stacks[name]
        missing = [key for key in URL_OUTPUTS if key not in outputs]
        if missing:
            raise ValueError(f"{name} in {outputs_file} lacks {missing}")
        if not remote_allowed:
            for key in URL_OUTPUTS:
                require_loopback(outputs[key])
        publisher = PublishClient(
            outputs[c.OUTPUT_PUBLISH_URL], region=outputs.get("Region"), credentials=credentials
        )
        return cls(name, outputs, tokens, publisher)

    @property
    def sse_url(self) -> str:
        return self.outputs[c.OUTPUT_SSE_URL].rstrip("/") + "/events"

    async def websocket(self, role: str, *, token: str | None = None) -> ClientConnection:
        """A connection authenticated as browsers do (the token in the subprotocol). Its first message
        is answered with a `welcome` before the answer."""
        token = self.tokens.token(role) if token is None else token
        return await websockets.connect(
            self.outputs[c.OUTPUT_WEBSOCKET_URL],
            subprotocols=[websockets.Subprotocol("streaming.v1"), websockets.Subprotocol(f"token.{token}")],
            open_timeout=TIMEOUT,
        )


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(f"{url} is not on loopback: name a deployed stack with --outputs-file")


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def receive(
    ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool], seconds: float = TIMEOUT
) -> dict[str, Any]:
    """The next message `wanted` accepts; the ones before it are dropped (heartbeats, others' events)."""
    async with asyncio.timeout(seconds):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if wanted(message):
                return message


async def events_until(
    ws: ClientConnection, ids: Sequence[str], seconds: float = TIMEOUT
) -> list[dict[str, Any]]:
    """Events delivered until every one of `ids` has been (other producers' events left out)."""
    wanted = set(ids)
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(seconds):
        while not wanted <= {event["id"] for event in received}:
            message = json.loads(await ws.recv())
            if message["type"] == "events":
                received += [event for event in message["events"] if event["id"] in wanted]
    return received
