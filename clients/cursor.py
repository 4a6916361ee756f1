"""Resume cursors on the client side (docs/protocol.md): "c1." + base64url of the JSON object
stream -> seq, without padding. A client builds one from the positions it tracks and reads the
positions out of those the server hands it (SSE event ids, `subscribed.cursor`, `replay.cursor`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

_PREFIX = "c1."


def encode_cursor(position: Mapping[str, int]) -> str:
    payload = json.dumps(dict(sorted(position.items())), separators=(",", ":")).encode()
    return _PREFIX + base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, int]:
    """The positions in a cursor the server issued; ValueError for anything else."""
    if not cursor.startswith(_PREFIX):
        raise ValueError("not a cursor this service issued")
    body = cursor[len(_PREFIX) :]
    value = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    if not isinstance(value, dict) or not all(isinstance(seq, int) for seq in value.values()):
        raise ValueError("not a cursor this service issued")
    return {str(stream): int(seq) for stream, seq in value.items()}
