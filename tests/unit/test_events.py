"""The event model: validation of what producers send, with one stable code per kind of bad input."""

from __future__ import annotations

import json

import pytest

from streaming.errors import ErrorCode, StreamingError
from streaming.events import Envelope, EventCatalog, format_ts, parse_new_event
from tests.conftest import example, new_id, signal

pytestmark = pytest.mark.events
LIMIT = 65536


def parse(raw, settings, limit=LIMIT):
    return parse_new_event(raw, settings.catalog, limit)


def code_of(raw, settings, limit=LIMIT) -> str:
    with pytest.raises(StreamingError) as raised:
        parse(raw, settings, limit)
    return raised.value.error.code


def test_every_configured_type_has_a_schema_whose_example_is_valid(settings):
    assert settings.catalog.types == set(settings.streams_by_type)
    for event_type in settings.streams_by_type:
        event = parse(example(event_type, settings), settings)
        assert event.type == event_type
        assert event.schema_version == 1


def test_a_valid_event_keeps_its_fields(settings):
    raw = signal(key="CH0012032048")
    event = parse(raw, settings)
    assert (event.id, event.key, event.data) == (raw["id"], raw["key"], raw["data"])


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda e: e.pop("id"), "missing_id"),
        (lambda e: e.update(id=""), "missing_id"),
        (lambda e: e.update(id="not-a-uuid"), "invalid_id"),
        (lambda e: e.update(id=12345), "invalid_id"),
        (lambda e: e.update(id="{" + e["id"] + "}"), "invalid_id"),
        (lambda e: e.update(type="signal.deleted"), "unknown_type"),
        (lambda e: e.pop("type"), "unknown_type"),
        (lambda e: e.update(schema_version=2), "unsupported_schema_version"),
        (lambda e: e.update(schema_version="1"), "invalid_envelope"),
        (lambda e: e.update(seq=7), "invalid_envelope"),
        (lambda e: e.update(data=[1, 2]), "invalid_envelope"),
        (lambda e: e.pop("data"), "invalid_envelope"),
        (lambda e: e.update(key=""), "invalid_envelope"),
        (lambda e: e.update(key="x" * 129), "invalid_envelope"),
        (lambda e: e.update(producer="someone-else"), "invalid_envelope"),
        (lambda e: e["data"].update(strength=1.5), "schema_violation"),
        (lambda e: e["data"].pop("instrument"), "schema_violation"),
        (lambda e: e["data"].update(unexpected=True), "schema_violation"),
        (lambda e: e["data"].update(generated_at="yesterday"), "schema_violation"),
    ],
)
def test_bad_input_gets_its_code(settings, mutate, code):
    raw = signal()
    mutate(raw)
    assert code_of(raw, settings) == code


def test_an_uppercase_uuid_is_the_same_id_in_canonical_form(settings):
    raw = signal()
    assert parse({**raw, "id": raw["id"].upper()}, settings).id == raw["id"]


def test_not_an_object_is_an_invalid_envelope(settings):
    assert code_of(["signal.created"], settings) == "invalid_envelope"


def test_data_over_the_size_limit_is_rejected_before_schema_validation(settings):
    raw = signal()
    raw["data"]["source"] = "m" * 64
    size = len(json.dumps(raw["data"], separators=(",", ":")).encode())
    assert code_of(raw, settings, limit=size - 1) == "payload_too_large"
    assert parse(raw, settings, limit=size).data == raw["data"]


def test_schema_violation_names_the_failing_path(settings):
    raw = signal()
    raw["data"]["direction"] = "sideways"
    with pytest.raises(StreamingError) as raised:
        parse(raw, settings)
    assert raised.value.details == [{"path": "data.direction"}]


def test_digest_differs_when_content_differs(settings):
    raw = signal()
    same = parse(json.loads(json.dumps(raw)), settings)
    assert parse(raw, settings).digest() == same.digest()
    changed = json.loads(json.dumps(raw))
    changed["data"]["strength"] = 0.1
    assert parse(changed, settings).digest() != same.digest()


def test_envelope_has_every_field_and_omits_an_absent_key():
    envelope = Envelope(
        id=new_id(),
        type="risk.alert",
        stream="risk",
        seq=3,
        prev=1,
        ts=format_ts(0),
        schema_version=1,
        data={"a": 1},
        producer="risk-engine",
        type_heads={"risk.alert": 3},
    )
    body = envelope.to_dict()
    assert set(body) == {"id", "type", "stream", "seq", "prev", "ts", "schema_version", "producer", "data"}
    assert body["ts"] == "1970-01-01T00:00:00.000Z"
    assert "key" in Envelope(**{**body, "key": "k"}, type_heads={}).to_dict()


def test_catalog_rejects_badly_named_schema_files(tmp_path):
    (tmp_path / "signal.created.json").write_text("{}")
    with pytest.raises(ValueError, match="v<N>"):
        EventCatalog.load(directory=tmp_path)


def test_catalog_requires_a_schema_for_every_configured_type():
    with pytest.raises(ValueError, match="no schema"):
        EventCatalog.load(frozenset({"signal.created", "order.filled"}))


def test_unknown_type_code_from_catalog_directly(settings):
    with pytest.raises(StreamingError) as raised:
        settings.catalog.validate_data("order.filled", 1, {})
    assert raised.value.error is ErrorCode.UNKNOWN_TYPE
