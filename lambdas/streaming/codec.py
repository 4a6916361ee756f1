"""How delivered events are encoded: optional compression of large payloads, batch frames sized for
API Gateway (32 KB frames, 128 KB messages), and Server-Sent Events framing. Shared by the WebSocket
fan-out and SSE."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from streaming.events import Envelope

ENCODING_FIELD = "encoding"
GZIP = "gzip"  # data is base64(gzip(UTF-8 JSON of the data object))
FRAME_BYTES = 32 * 1024  # API Gateway's WebSocket frame size; also its billing step
MESSAGE_BYTES = 128 * 1024  # API Gateway's WebSocket message limit
_FRAME_ALLOWANCE = 64  # room for the frame's own fields


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_event(envelope: Envelope, compress_above: int, types: Iterable[str]) -> dict[str, Any]:
    """The envelope as delivered to a subscriber to `types` (its `prev` among them), its data
    gzip-compressed and flagged when larger than the threshold."""
    body = envelope.to_dict(types)
    data = dumps(body["data"]).encode()
    if len(data) > compress_above:
        body["data"] = base64.b64encode(gzip.compress(data, compresslevel=6, mtime=0)).decode()
        body[ENCODING_FIELD] = GZIP
    return body


def decode_event(body: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of encode_event, for clients: the envelope with its data object restored."""
    if body.get(ENCODING_FIELD) != GZIP:
        return dict(body)
    decoded = {k: v for k, v in body.items() if k != ENCODING_FIELD}
    decoded["data"] = json.loads(gzip.decompress(base64.b64decode(body["data"])))
    return decoded


# An event as encoded for one subscriber: the same bytes for every subscriber with the same `prev`
# (and the same count of events it stands for, when coalesced).
EncodedKey = tuple[str, int, int, int]  # stream, seq, prev, coalesced


def encoded_event(event: Envelope, compress_above: int, types: Iterable[str]) -> bytes:
    """The envelope as it goes on the wire inside an `events` message."""
    return dumps(encode_event(event, compress_above, types)).encode()


def encoded_for(
    event: Envelope, types: frozenset[str], compress_above: int, encoded: MutableMapping[EncodedKey, bytes]
) -> bytes:
    """The event as a subscriber to `types` gets it: from `encoded`, or encoded now and kept there."""
    key = (event.stream, event.seq, event.prev_among(types), event.coalesced)
    body = encoded.get(key)
    if body is None:
        body = encoded[key] = encoded_event(event, compress_above, types)
    return body


def event_frames(
    events: Sequence[Envelope],
    types: frozenset[str],
    compress_above: int,
    limit: int = FRAME_BYTES,
    encoded: MutableMapping[EncodedKey, bytes] | None = None,
) -> list[bytes]:
    """`events` (in seq order per stream), as delivered to a subscriber to `types`, in `events`
    messages of at most `limit` bytes each; an event larger than that travels alone. `encoded` keeps
    what was encoded already, for a caller that frames the same events for many connections, so each
    is encoded (and compressed) once per distinct `prev`, not once per connection."""
    encoded = {} if encoded is None else encoded
    frames: list[bytes] = []
    while events:
        frame, taken = first_frame(events, types, compress_above, limit, encoded)
        frames.append(frame)
        events = events[taken:]
    return frames


def first_frame(
    events: Sequence[Envelope],
    types: frozenset[str],
    compress_above: int,
    limit: int = FRAME_BYTES,
    encoded: MutableMapping[EncodedKey, bytes] | None = None,
) -> tuple[bytes, int]:
    """The first of `event_frames`, and how many of `events` it holds (at least one)."""
    encoded = {} if encoded is None else encoded
    batch: list[bytes] = []
    size = 0
    for event in events:
        body = encoded_for(event, types, compress_above, encoded)
        if batch and size + len(body) + 1 > limit - _FRAME_ALLOWANCE:
            break
        batch.append(body)
        size += len(body) + 1
    return _frame(batch), len(batch)


def _frame(batch: list[bytes]) -> bytes:
    """An `events` message (docs/protocol.md) from already encoded envelopes."""
    return b'{"type":"events","events":[' + b",".join(batch) + b"]}"


def sse_message(
    *, data: str, event: str | None = None, event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """One Server-Sent Events message (WHATWG HTML, "server-sent events"). `data` is one line of JSON."""
    lines = []
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode()


def sse_comment(text: str) -> bytes:
    """A comment line: ignored by clients, keeps proxies and idle timers from closing the stream."""
    return f": {text}\n\n".encode()
