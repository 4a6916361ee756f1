"""How the probe listens: a subscription to one event type on each transport, as a subscriber
opens it (docs/protocol.md). Entered, each is ready (every event published from then on is delivered to
it) and yields the envelopes that arrive, until it is left, which closes it. An SSE stream's relay
(streaming.relay) connects to the WebSocket API the same way (`websocket_connection`)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import h11
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from streaming.auth import SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX


class NotReady(Exception):
    """A transport answered, but not with a subscription to the type."""


def websocket_connection(
    url: str, token: str, *, open_timeout: float | None = None, keepalive_seconds: float = 20.0
) -> connect:
    """A connection to the WebSocket API, entered once open, with the token in the subprotocol. The
    connection pings at the WebSocket level every `keepalive_seconds` and closes itself when a ping
    goes unanswered as long. It asks for no compression: API Gateway offers none, and locally it would
    only cost CPU on both ends of every frame."""
    protocols = [Subprotocol(SUBPROTOCOL), Subprotocol(TOKEN_SUBPROTOCOL_PREFIX + token)]
    return connect(
        url,
        subprotocols=protocols,
        compression=None,
        open_timeout=open_timeout,
        ping_interval=keepalive_seconds,
        ping_timeout=keepalive_seconds,
    )


@asynccontextmanager
async def websocket_events(
    url: str, token: str, event_type: str
) -> AsyncIterator[AsyncIterator[Mapping[str, Any]]]:
    """A connection subscribed to `event_type`, ready once `subscribed` says so; the token travels in
    the subprotocol."""
    async with websocket_connection(url, token) as ws:  # bounded by the caller
        await ws.send(json.dumps({"action": "subscribe", "types": [event_type], "id": "listen"}))
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "error":
                raise NotReady(f"subscribe answered {message.get('code')}")
            if message.get("type") == "subscribed":
                if event_type not in message["types"]:
                    raise NotReady(f"{event_type} denied to the token's role")
                break
        else:
            raise NotReady("closed before subscribed")

        async def events() -> AsyncIterator[Mapping[str, Any]]:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "events":
                    for event in message["events"]:
                        yield event

        yield events()


# -- SSE ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def sse_events(
    url: str, token: str, event_type: str
) -> AsyncIterator[AsyncIterator[Mapping[str, Any]]]:
    """An SSE stream of `event_type` from the events endpoint `url` (…/events), started live, ready at
    its first message (the heartbeat, written once the stream's start position is fixed). HTTP/1.1 over
    asyncio with h11, which the SSE app's uvicorn brings along; the token travels in the Authorization
    header, never in the URL."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname or ""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl.create_default_context() if tls else None, server_hostname=host if tls else None
    )
    try:
        http = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=f"{parts.path or '/'}?types={quote(event_type)}",
            headers=[
                ("Host", parts.netloc),
                ("Accept", "text/event-stream"),
                ("Authorization", f"Bearer {token}"),
            ],
        )
        writer.write(http.send(request) + http.send(h11.EndOfMessage()))
        await writer.drain()
        response = await _next_http_event(http, reader)
        if not isinstance(response, h11.Response):
            raise NotReady(f"no HTTP response ({type(response).__name__})")
        if response.status_code != 200:
            raise NotReady(f"HTTP {response.status_code} {await _error_code(http, reader)}".rstrip())
        messages = _sse_messages(http, reader)
        if await anext(messages, None) is None:  # the first message is a heartbeat
            raise NotReady("the stream ended before its first message")

        async def events() -> AsyncIterator[Mapping[str, Any]]:
            async for kind, data in messages:
                if kind == event_type:
                    yield json.loads(data)

        yield events()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _next_http_event(http: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while (event := http.next_event()) is h11.NEED_DATA:
        http.receive_data(await reader.read(65536))  # b"" at the end: h11 then says ConnectionClosed
    return event


async def _error_code(http: h11.Connection, reader: asyncio.StreamReader) -> str:
    """The code of a refusal's JSON body ({"error": {"code": ...}}), or nothing."""
    body = b""
    while isinstance(part := await _next_http_event(http, reader), h11.Data):
        body += part.data
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return str(json.loads(body)["error"]["code"])
    return ""


async def _sse_messages(http: h11.Connection, reader: asyncio.StreamReader) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each message with both; comments and other fields are skipped."""
    text, buffer = codecs.getincrementaldecoder("utf-8")(), ""
    while isinstance(chunk := await _next_http_event(http, reader), h11.Data):
        buffer += text.decode(chunk.data).replace("\r\n", "\n")
        *complete, buffer = buffer.split("\n\n")
        for block in complete:
            fields = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields[name] = value
            if "event" in fields and "data" in fields:
                yield fields["event"], fields["data"]
