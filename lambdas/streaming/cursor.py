"""The opaque resume cursor: for each stream, the last sequence number the holder has been served.

Clients treat it as an opaque string. The same cursor resumes a WebSocket or an SSE subscription.
Encoding: "c1." + base64url(JSON object stream -> seq), without padding.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping

from streaming.constants import STREAM_NAME_PATTERN
from streaming.errors import ErrorCode, StreamingError

_PREFIX = "c1."
_STREAM = re.compile(STREAM_NAME_PATTERN)
MAX_CURSOR_LENGTH = 1024

# A place in the streams, stream -> seq: a cursor's content, the stream heads, how far a reader got.
Position = dict[str, int]


def encode(cursor: Mapping[str, int]) -> str:
    payload = json.dumps(dict(sorted(cursor.items())), separators=(",", ":")).encode()
    return _PREFIX + base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode(token: str | None) -> Position:
    """An absent or empty cursor means "from the start of the replay window"."""
    if not token:
        return {}
    if len(token) > MAX_CURSOR_LENGTH or not token.startswith(_PREFIX):
        raise StreamingError(ErrorCode.INVALID_CURSOR, "cursor is not one this service issued")
    body = token[len(_PREFIX) :]
    try:
        value = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError) as error:
        raise StreamingError(ErrorCode.INVALID_CURSOR, "cursor is not one this service issued") from error
    if not isinstance(value, dict) or not all(
        isinstance(stream, str)
        and _STREAM.match(stream)
        and isinstance(seq, int)
        and not isinstance(seq, bool)
        and seq >= 0
        for stream, seq in value.items()
    ):
        raise StreamingError(ErrorCode.INVALID_CURSOR, "cursor is not one this service issued")
    return value
