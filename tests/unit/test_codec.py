"""Delivered events: gzip above a threshold, each subscriber's `prev`, frames sized for API Gateway."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

from streaming import codec
from streaming.events import Envelope

pytestmark = pytest.mark.events
NEVER = 10**9  # a compression threshold no test event reaches
TYPES = frozenset({"signal.created"})  # what the subscriber in these tests subscribes to


def envelope(
    seq: int, stream: str = "market", data: dict[str, Any] | None = None, **overrides: Any
) -> Envelope:
    fields: dict[str, Any] = {
        "id": f"0192f1c4-8d2e-7a51-9c3b-{seq:012d}",
        "type": "signal.created",
        "stream": stream,
        "seq": seq,
        "prev": max(seq - 1, 0),
        "ts": f"2026-11-27T08:00:{seq % 60:02d}.000Z",
        "schema_version": 1,
        "data": {"n": seq} if data is None else data,
        "producer": "tests",
        "type_heads": {},
    }
    return Envelope(**{**fields, **overrides})


def data_of_bytes(size: int, char: str = "a") -> dict[str, Any]:
    """A data object whose compact JSON is exactly `size` bytes (`char` is 1, 2 or 3 bytes in UTF-8)."""
    width = len(char.encode())
    assert (size - 8) % width == 0
    data = {"s": char * ((size - 8) // width)}
    assert len(codec.dumps(data).encode()) == size
    return data


def frame_events(frame: bytes) -> list[dict[str, Any]]:
    message = json.loads(frame)
    assert message["type"] == "events" and set(message) == {"type", "events"}
    return [codec.decode_event(event) for event in message["events"]]


@pytest.mark.parametrize("key", [None, "CH0012032048"])
@pytest.mark.parametrize("threshold", [NEVER, 16])
def test_encode_then_decode_is_the_envelope(threshold, key):
    original = envelope(7, data={"text": "grüezi " * 20, "nested": {"list": [1, 2.5, None, True]}}, key=key)
    wire = json.loads(codec.dumps(codec.encode_event(original, threshold, TYPES)))
    assert (wire.get("encoding") == "gzip") == (threshold == 16)
    assert codec.decode_event(wire) == original.to_dict(TYPES)


def test_compressed_data_is_base64_of_gzip_and_everything_else_stays_readable():
    original = envelope(3, data=data_of_bytes(400))
    encoded = codec.encode_event(original, 100, TYPES)
    assert encoded["encoding"] == "gzip"
    assert base64.b64decode(encoded["data"])[:2] == b"\x1f\x8b"  # the gzip magic number
    assert {k: v for k, v in encoded.items() if k not in ("data", "encoding")} == {
        k: v for k, v in original.to_dict(TYPES).items() if k != "data"
    }


@pytest.mark.parametrize("char", ["a", "é", "日"])
def test_data_is_compressed_only_when_its_utf8_json_is_larger_than_the_threshold(char):
    width = len(char.encode())
    at = envelope(1, data=data_of_bytes(8 + 30 * width, char))
    above = envelope(2, data=data_of_bytes(8 + 31 * width, char))
    threshold = 8 + 30 * width
    assert "encoding" not in codec.encode_event(at, threshold, TYPES)
    assert codec.encode_event(at, threshold, TYPES)["data"] == at.data
    assert codec.encode_event(above, threshold, TYPES)["encoding"] == "gzip"


def test_a_body_without_the_gzip_flag_is_returned_as_is():
    body = envelope(1).to_dict()
    assert codec.decode_event(body) == body
    assert codec.decode_event(body) is not body


@pytest.mark.batching
def test_no_events_no_frames():
    assert codec.event_frames([], TYPES, NEVER) == []


@pytest.mark.batching
def test_small_events_share_frames_and_keep_their_order():
    events = [envelope(seq) for seq in range(1, 51)]
    frames = codec.event_frames(events, TYPES, NEVER)
    assert len(frames) < len(events)
    assert [e["seq"] for frame in frames for e in frame_events(frame)] == list(range(1, 51))


def mixed_events() -> list[Envelope]:
    """Three streams interleaved, sizes from tiny to over a frame, some compressed, some not ASCII."""
    payloads = [
        {"blob": base64.b64encode(os.urandom(3000)).decode()},  # hardly compressible
        data_of_bytes(2000),
        data_of_bytes(8 + 3 * 2600, "日"),  # ~7.8 KB, below the threshold, three bytes a character
        {"n": 1},
        data_of_bytes(9000),  # compressed
    ]
    streams = ["market", "risk", "ops"]
    seqs = {"market": 10, "risk": 0, "ops": 3}
    events = []
    for i in range(60):
        stream = streams[i % 3]
        seqs[stream] += 1
        events.append(envelope(seqs[stream], stream=stream, data=payloads[i % len(payloads)]))
    return events


@pytest.mark.batching
def test_frames_fit_the_limit_and_carry_every_event_once_in_order():
    events = mixed_events()
    frames = codec.event_frames(events, TYPES, 8192)
    assert len(frames) > 1
    for frame in frames:
        assert len(frame) <= codec.FRAME_BYTES, f"a frame of {len(frame)} bytes"
    delivered = [event for frame in frames for event in frame_events(frame)]
    assert delivered == [event.to_dict(TYPES) for event in events]


@pytest.mark.batching
def test_multibyte_data_is_counted_in_bytes_not_characters():
    # Each event is about 8 KB in UTF-8 but under 3,000 characters.
    events = [envelope(seq, data=data_of_bytes(8 + 3 * 2600, "日")) for seq in range(1, 21)]
    frames = codec.event_frames(events, TYPES, 8192)
    assert max(len(frame) for frame in frames) <= codec.FRAME_BYTES
    assert sum(len(frame_events(frame)) for frame in frames) == 20


def test_each_event_carries_the_previous_seq_among_the_subscribers_types():
    heads = {"signal.created": 9, "proposal.updated": 11, "decision.made": 12}
    event = envelope(12, type="decision.made", prev=5, type_heads=heads)
    assert event.prev_among({"decision.made"}) == 5
    assert event.prev_among({"decision.made", "signal.created"}) == 9
    assert event.prev_among({"decision.made", "proposal.updated", "risk.alert"}) == 11
    (frame,) = codec.event_frames([event], frozenset({"decision.made", "signal.created"}), NEVER)
    assert [e["prev"] for e in frame_events(frame)] == [9]


def test_an_event_is_encoded_once_per_distinct_prev():
    heads = {"signal.created": 9, "proposal.updated": 11, "decision.made": 12}
    event = envelope(12, type="decision.made", prev=5, type_heads=heads)
    encoded: dict[codec.EncodedKey, bytes] = {}
    subscribers = [
        {"decision.made"},
        {"decision.made", "signal.created"},
        {"decision.made", "eval.completed"},
    ]
    for types in subscribers:
        codec.event_frames([event], frozenset(types), NEVER, encoded=encoded)
    assert sorted(encoded) == [("market", 12, 5, 0), ("market", 12, 9, 0)]


@pytest.mark.batching
def test_an_event_larger_than_a_frame_travels_alone():
    big = envelope(2, data=data_of_bytes(codec.FRAME_BYTES + 100))
    events = [envelope(1), big, envelope(3), envelope(4)]
    frames = codec.event_frames(events, TYPES, NEVER)
    assert [[e["seq"] for e in frame_events(frame)] for frame in frames] == [[1], [2], [3, 4]]
    assert len(frames[1]) > codec.FRAME_BYTES


@pytest.mark.batching
def test_only_single_event_frames_exceed_the_limit():
    sizes = [100, 20_000, 31_000, 33_000, 500, 32_600, 12_000, 12_000, 12_000]
    events = [envelope(seq, data=data_of_bytes(size)) for seq, size in enumerate(sizes, start=1)]
    frames = codec.event_frames(events, TYPES, NEVER)
    for frame in frames:
        if len(frame) > codec.FRAME_BYTES:
            assert len(frame_events(frame)) == 1
    assert [e["seq"] for frame in frames for e in frame_events(frame)] == list(range(1, len(sizes) + 1))


@pytest.mark.batching
def test_a_smaller_limit_gives_more_frames_within_it():
    events = [envelope(seq, data=data_of_bytes(1000)) for seq in range(1, 31)]
    limit = 4096
    frames = codec.event_frames(events, TYPES, NEVER, limit=limit)
    assert len(frames) >= 30 * 1000 // limit
    assert all(len(frame) <= limit for frame in frames)


def test_delivered_envelopes_plain_or_compressed_match_the_documented_schema():
    import fastjsonschema

    from tools.events_doc import ENVELOPE_SCHEMA

    validate = fastjsonschema.compile(json.loads(ENVELOPE_SCHEMA.read_text()))
    large = Envelope(
        "0192f1c4-8d2e-7a51-9c3b-000000000001",
        "proposal.updated",
        "market",
        3,
        1,
        "2026-11-27T08:00:00.000Z",
        1,
        {"changes": {"rationale": "r" * 2000}},
        "tests",
        type_heads={"proposal.updated": 3},
    )
    compressed = codec.encode_event(large, 256, frozenset({"proposal.updated"}))
    plain = codec.encode_event(large, 10_000, frozenset({"proposal.updated"}))
    assert compressed["encoding"] == "gzip" and "encoding" not in plain
    validate(compressed)
    validate(plain)
    with pytest.raises(fastjsonschema.JsonSchemaException):
        validate({**plain, "encoding": "gzip"})  # flagged, but the data is not compressed
    with pytest.raises(fastjsonschema.JsonSchemaException):
        validate({k: v for k, v in compressed.items() if k != "encoding"})  # compressed, not flagged
