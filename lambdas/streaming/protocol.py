"""The WebSocket message protocol (docs/protocol.md): parsing what clients send, shaping what the
server sends. Transport-free, so the deployed handlers and the local gateway share it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streaming import constants as c
from streaming import cursor as cursors
from streaming.errors import ErrorCode, StreamingError
from streaming.events import format_ts
from streaming.replay import MAX_REPLAY_LIMIT
from streaming.results import Page

# Client messages are small; API Gateway itself allows 32 KB frames and 128 KB messages.
MAX_INBOUND_BYTES = 8192
ACTIONS = c.WEBSOCKET_ACTIONS
_REQUEST_ID_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Subscribe:
    types: frozenset[str]
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    types: frozenset[str]
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Replay:
    """After `cursor`, or the `last` N; narrowed to `types` if given (else the subscriptions)."""

    cursor: str | None
    last: int | None
    types: frozenset[str] | None
    limit: int
    request_id: str | None = None


Request = Subscribe | Unsubscribe | Ping | Replay
_FIELDS = {
    "subscribe": {"action", "id", "types"},
    "unsubscribe": {"action", "id", "types"},
    "ping": {"action", "id"},
    "replay": {"action", "id", "cursor", "last", "types", "limit"},
}


def request_id_of(raw: str | bytes | None) -> str | None:
    """The request id to echo, also on errors, when the message carries a valid one."""
    try:
        message = json.loads(raw or "")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    request_id = message.get("id") if isinstance(message, dict) else None
    valid = isinstance(request_id, str) and 0 < len(request_id) <= _REQUEST_ID_LIMIT
    return request_id if valid else None


def parse(raw: str | bytes, known_types: Iterable[str]) -> Request:
    """One client message, validated; StreamingError with the code to answer otherwise."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_INBOUND_BYTES:
        raise StreamingError(
            ErrorCode.MESSAGE_TOO_LARGE, f"message is {size} bytes; the limit is {MAX_INBOUND_BYTES}"
        )
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise StreamingError(ErrorCode.MALFORMED_JSON, "message is not valid JSON") from None
    if not isinstance(message, dict):
        raise StreamingError(ErrorCode.INVALID_MESSAGE, 'a message is a JSON object with an "action"')
    action = message.get("action")
    if action not in ACTIONS:
        raise StreamingError(
            ErrorCode.UNKNOWN_ACTION, f"unknown action {action!r}; valid actions: {list(ACTIONS)}"
        )
    unknown = sorted(set(message) - _FIELDS[action])
    if unknown:
        raise StreamingError(ErrorCode.INVALID_MESSAGE, f"{action} does not take {unknown}")
    request_id = _request_id(message.get("id"))
    if action == "ping":
        return Ping(request_id)
    if action in ("subscribe", "unsubscribe"):
        types = _types(message.get("types"), known_types, required=True)
        assert types is not None
        return (Subscribe if action == "subscribe" else Unsubscribe)(types, request_id)
    cursor, last = message.get("cursor"), message.get("last")
    if (cursor is None) == (last is None):
        raise StreamingError(
            ErrorCode.INVALID_MESSAGE, "replay takes either a cursor or last, not both or neither"
        )
    if last is not None and "limit" in message:
        raise StreamingError(ErrorCode.INVALID_MESSAGE, "limit goes with a cursor; last is the count itself")
    if cursor is not None:
        if not isinstance(cursor, str):
            raise StreamingError(ErrorCode.INVALID_CURSOR, "cursor must be a string this service issued")
        cursors.decode(cursor)  # refuse a bad cursor now, with its own code
    return Replay(
        cursor=cursor,
        last=None if last is None else _bounded(last, "last"),
        types=_types(message.get("types"), known_types, required=False),
        limit=_bounded(message.get("limit", 100), "limit"),
        request_id=request_id,
    )


def welcome(
    connection_id: str, role: str, allowed: Iterable[str], heads: cursors.Position, expires_at: int
) -> dict[str, Any]:
    return {
        "type": "welcome",
        "connection_id": connection_id,
        "role": role,
        "allowed_types": sorted(allowed),
        "server_time": _now(),
        "heads": dict(heads),
        "expires_at": expires_at,
    }


def reconnect(reason: str, at: int) -> dict[str, Any]:
    """The server closes this connection at `at` (epoch seconds): open the next one before then."""
    return {"type": "reconnect", "reason": reason, "at": at, "server_time": _now()}


def subscribed(
    types: Iterable[str], denied: Iterable[str], position: cursors.Position, request_id: str | None
) -> dict[str, Any]:
    """`cursor`: the stream heads when the subscription began; live delivery is complete after it."""
    return _answer(
        "subscribed", request_id, types=sorted(types), denied=sorted(denied), cursor=cursors.encode(position)
    )


def unsubscribed(types: Iterable[str], request_id: str | None) -> dict[str, Any]:
    return _answer("unsubscribed", request_id, types=sorted(types))


def pong(heads: cursors.Position, request_id: str | None) -> dict[str, Any]:
    """Server time lets a client measure clock drift; heads let it notice a lost last event."""
    return _answer("pong", request_id, server_time=_now(), heads=dict(heads))


def replayed(page: Page, request_id: str | None) -> dict[str, Any]:
    """Ends a replay, whose events went out just before it as `events` messages."""
    return _answer(
        "replay",
        request_id,
        count=len(page.events),
        cursor=cursors.encode(page.cursor),
        more=page.more,
        truncated=page.truncated,
    )


def error(failure: StreamingError, request_id: str | None = None) -> dict[str, Any]:
    return _answer("error", request_id, code=failure.error.code, message=failure.message)


def _answer(kind: str, request_id: str | None, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **({"id": request_id} if request_id is not None else {}), **fields}


def _now() -> str:
    return format_ts(int(time.time() * 1000))


def _request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _REQUEST_ID_LIMIT:
        raise StreamingError(
            ErrorCode.INVALID_MESSAGE, f"id must be a string of 1 to {_REQUEST_ID_LIMIT} characters"
        )
    return value


def _types(value: Any, known: Iterable[str], *, required: bool) -> frozenset[str] | None:
    if value is None and not required:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise StreamingError(ErrorCode.INVALID_MESSAGE, "types must be a non-empty list of event type names")
    return known_types(value, known)


def known_types(names: Iterable[str], known: Iterable[str]) -> frozenset[str]:
    """The named event types; UNKNOWN_TYPE if one is not configured. SSE's `types` too."""
    requested = frozenset(names)
    unknown = sorted(requested - set(known))
    if unknown:
        raise StreamingError(ErrorCode.UNKNOWN_TYPE, f"unknown event types {unknown}")
    return requested


def _bounded(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REPLAY_LIMIT:
        raise StreamingError(
            ErrorCode.INVALID_MESSAGE, f"{name} must be an integer from 1 to {MAX_REPLAY_LIMIT}"
        )
    return value
