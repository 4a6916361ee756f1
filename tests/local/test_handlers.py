"""The deployed handlers, invoked with real Function URL and EventBridge event shapes against moto."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest

from handlers import composition, publish_eventbridge, publish_http
from local.lambda_runtime import LocalContext, function_url_event
from streaming import constants as c
from streaming.errors import StreamingError
from tests.conftest import CONNECTIONS_TABLE, TABLE, example, signal

pytestmark = [pytest.mark.events, pytest.mark.usefixtures("handler_environment")]


def call(
    method: str, path: str, body: Any = None, *, query: str = "", content_type: str = "application/json"
):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body) if body is not None else ""
    event = function_url_event(
        method=method,
        path=path,
        query=query,
        headers={"content-type": content_type, "host": "abc.lambda-url.eu-central-1.on.aws"},
        body=raw.encode() if isinstance(raw, str) else raw,
        source_ip="203.0.113.9",
        caller_arn="arn:aws:iam::123456789012:role/risk-engine",
        access_key="AKIAEXAMPLE",
    )
    response = publish_http.handler(event, LocalContext("publish-http"))
    return response["statusCode"], json.loads(response["body"]) if response.get("body") else None


def stored_count(dynamodb) -> int:
    return dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"]


def test_publish_one_event_returns_its_stream_and_seq(settings):
    raw = example("risk.alert", settings)
    status, body = call("POST", "/events", raw)
    assert status == 201
    assert body | {"ts": None} == {
        "id": raw["id"],
        "type": "risk.alert",
        "stream": "risk",
        "seq": 1,
        "ts": None,
        "duplicate": False,
    }
    status, again = call("POST", "/events", raw)
    assert (status, again["seq"], again["duplicate"]) == (200, 1, True)


def test_publish_a_batch_and_read_it_back(settings):
    raws = [signal(), example("decision.made", settings), example("system.status", settings)]
    status, body = call("POST", "/events", {"events": raws})
    assert status == 201
    assert [r["seq"] for r in body["events"]] == [1, 2, 1]
    status, page = call("GET", "/events", query="role=analyst")
    assert status == 200
    assert [e["id"] for e in page["events"]] == [raws[0]["id"], raws[1]["id"]]
    assert page["events"][0]["producer"] == "arn:aws:iam::123456789012:role/risk-engine"
    # A cursor is a position for the role it was issued to: the analyst never sees system.status.
    later = signal()
    call("POST", "/events", later)
    status, page = call("GET", "/events", query=f"role=analyst&cursor={page['cursor']}")
    assert [e["id"] for e in page["events"]] == [later["id"]]
    status, latest = call("GET", "/events/latest", query="count=1&types=decision.made")
    assert [e["id"] for e in latest["events"]] == [raws[1]["id"]]
    assert call("GET", "/streams") == (200, {"streams": {"market": 3, "ops": 1, "risk": 0}})


def test_a_json_array_is_a_batch_too(settings):
    status, body = call("POST", "/events", [signal(), signal()])
    assert status == 201 and [r["seq"] for r in body["events"]] == [1, 2]


def _bad_batches(settings) -> list[tuple[str, Any, str, int]]:
    too_big = signal()
    too_big["data"]["source"] = "x"
    return [
        ("malformed json", '{"id": ', "malformed_json", 400),
        # Found by the fuzz suite: a body that is not UTF-8 was a 500.
        ("not utf-8", b'{"id": "\xff"}', "malformed_json", 400),
        ("nested too deeply", "[" * 5000 + "]" * 5000, "malformed_json", 400),
        (
            "missing id",
            {"events": [signal(), {k: v for k, v in signal().items() if k != "id"}]},
            "missing_id",
            400,
        ),
        ("malformed id", {"events": [signal(), signal("12345")]}, "invalid_id", 400),
        ("unknown type", {"events": [signal(), {**signal(), "type": "order.filled"}]}, "unknown_type", 400),
        (
            "schema violation",
            {"events": [signal(), {**signal(), "data": {"signal_id": "x"}}]},
            "schema_violation",
            400,
        ),
        ("empty batch", {"events": []}, "empty_batch", 400),
        (
            "batch too large",
            {"events": [signal() for _ in range(settings.max_batch_events + 1)]},
            "batch_too_large",
            413,
        ),
        (
            "same id twice",
            {"events": [signal(str(uuid.UUID(int=7))), signal(str(uuid.UUID(int=7)))]},
            "duplicate_id_in_batch",
            400,
        ),
        ("extra top-level field", {"events": [signal()], "mode": "fast"}, "invalid_envelope", 400),
        ("a number", "42", "invalid_envelope", 400),
        ("a string", '"signal.created"', "invalid_envelope", 400),
        ("null", "null", "invalid_envelope", 400),
        ("events not a list", {"events": {"id": "x"}}, "invalid_envelope", 400),
    ]


def test_every_bad_batch_gets_its_code_and_stores_nothing(settings, dynamodb):
    for name, body, code, status in _bad_batches(settings):
        got_status, got = call("POST", "/events", body)
        assert (got_status, got["error"]["code"]) == (status, code), name
    assert stored_count(dynamodb) == 0


def test_a_batch_reports_every_bad_event_by_its_index_in_the_batch(settings):
    same = str(uuid.uuid4())
    violating = signal()
    violating["data"]["direction"] = "sideways"
    batch = [signal("bad"), signal(same), {**signal(), "type": "x.y"}, signal(same), violating]
    _, body = call("POST", "/events", {"events": batch})
    assert body["error"]["code"] == "invalid_id"
    assert [(d["index"], d["code"]) for d in body["error"]["details"]] == [
        (0, "invalid_id"),
        (2, "unknown_type"),
        (3, "duplicate_id_in_batch"),
        (4, "schema_violation"),
    ]
    assert body["error"]["details"][3]["path"] == "data.direction"


def test_payload_over_the_limit_is_refused_before_parsing(settings, dynamodb):
    status, body = call("POST", "/events", "x" * (settings.max_body_bytes + 1))
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    oversized = signal()
    oversized["data"]["source"] = "s" * (settings.max_event_bytes + 1)
    status, body = call("POST", "/events", oversized)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert stored_count(dynamodb) == 0


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/events", {"content_type": "text/plain"}, 415, "unsupported_media_type"),
        ("DELETE", "/events", {}, 405, "method_not_allowed"),
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("GET", "/events", {"query": "cursor=c1.zzz"}, 400, "invalid_cursor"),
        ("GET", "/events", {"query": "limit=many"}, 400, "invalid_query"),
        ("GET", "/events/latest", {"query": "count=0"}, 400, "invalid_query"),
        ("GET", "/events", {"query": "role=intruder"}, 400, "unknown_role"),
    ],
)
def test_request_errors_have_codes(method, path, kwargs, status, code):
    got_status, body = call(method, path, signal() if method == "POST" else None, **kwargs)
    assert (got_status, body["error"]["code"]) == (status, code)


def eventbridge_event(
    detail_type: str, detail: dict[str, Any], event_id: str | None = None
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "com.example.risk-engine",
        "account": "123456789012",
        "time": "2026-11-27T08:41:19Z",
        "region": "eu-central-1",
        "resources": [],
        "detail": detail,
    }


def test_eventbridge_events_enter_the_same_publish_code_once(settings, dynamodb):
    data = example("risk.alert", settings)["data"]
    event = eventbridge_event("risk.alert", {"data": data, "key": "CH0012032048"})
    result = publish_eventbridge.handler(event, LocalContext("publish-eventbridge"))
    assert (result["stream"], result["seq"], result["id"]) == ("risk", 1, event["id"])
    redelivered = publish_eventbridge.handler(event, LocalContext("publish-eventbridge"))
    assert redelivered["duplicate"] is True
    _, page = call("GET", "/events", query="types=risk.alert")
    assert page["events"][0]["producer"] == "com.example.risk-engine"
    assert page["events"][0]["key"] == "CH0012032048"


def test_invalid_eventbridge_events_raise_so_they_reach_the_dead_letter_queue(dynamodb):
    from streaming.errors import StreamingError

    with pytest.raises(StreamingError):
        publish_eventbridge.handler(
            eventbridge_event("risk.alert", {"data": {}}), LocalContext("publish-eventbridge")
        )
    assert stored_count(dynamodb) == 0


def test_an_unexpected_failure_is_a_500_with_a_code_and_no_details(monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("table on fire: secret-ish internals")

    monkeypatch.setattr(composition.store(), "heads", broken)
    status, body = call("GET", "/streams")
    assert (status, body["error"]["code"]) == (500, "internal_error")
    assert "fire" not in json.dumps(body)


def test_in_process_producers_publish_with_the_handlers_environment():
    [result] = composition.publisher().publish(signal(), producer="signal-model")
    assert (result.stream, result.seq, result.duplicate) == ("market", 1, False)


def test_in_process_publish_refuses_bad_input_like_the_api():
    with pytest.raises(StreamingError) as raised:
        composition.publisher().publish({**signal(), "type": "nope"}, producer="x")
    assert raised.value.error.code == "unknown_type"


def test_publishers_deliver_live_where_they_are_wired_to_the_websocket_api(monkeypatch):
    assert composition.live_deliveries() == (composition.deliver_over_websocket,)
    monkeypatch.delenv(c.ENV_MANAGEMENT_URL)
    assert composition.live_deliveries() == ()  # a publisher without the WebSocket API stores only
    [result] = composition.publisher().publish(signal(), producer="store-only")
    assert result.seq == 1


def test_an_unreadable_signing_key_is_the_servers_fault_not_the_tokens(monkeypatch):
    from stacks.config import load
    from streaming.auth import KeyUnavailable

    missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:streaming-missing"
    for name, value in load("dev").auth_settings(missing).to_env().items():
        monkeypatch.setenv(name, value)
    token_verifier, _ = composition.verifier()
    token = jwt.encode({"sub": "alice"}, "a key of at least thirty-two bytes", algorithm="HS256")
    with pytest.raises(KeyUnavailable) as raised:
        token_verifier.verify(token)
    assert raised.value.reason.startswith("signing key unavailable")


def test_the_authorizer_counts_refusals_and_neither_its_metrics_nor_its_logs_carry_the_token(
    dynamodb, monkeypatch, capsys
):
    import io

    import boto3

    from handlers import ws_authorizer
    from stacks.config import load
    from streaming.observability import logger

    key = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="signing-key", SecretString="k" * 64
    )["ARN"]
    for name, value in load("dev").auth_settings(key).to_env().items():
        monkeypatch.setenv(name, value)
    forged = jwt.encode({"sub": "mallory", "role": "admin"}, "not the key" * 4, algorithm="HS256")
    event = {
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:api/dev/$connect",
        "headers": {"Sec-WebSocket-Protocol": f"streaming.v1, token.{forged}"},
        "queryStringParameters": {"token": forged},
        "requestContext": {"identity": {"sourceIp": "203.0.113.9"}},
    }
    logs = io.StringIO()
    before = logger.registered_handler.setStream(logs)  # type: ignore[attr-defined]
    try:
        answer = ws_authorizer.handler(event, LocalContext("ws-authorizer"))
    finally:
        logger.registered_handler.setStream(before)  # type: ignore[attr-defined]
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    output = capsys.readouterr().out + logs.getvalue()  # metrics (EMF) and log lines
    documents = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    [refused] = [d for d in documents if "ConnectionsRefused" in d]
    assert refused["ConnectionsRefused"] == refused["AuthFailures"] == [1.0]  # the total, for the alarm
    [by_reason] = [d for d in documents if "AuthFailures" in d and "reason" in d]
    assert (by_reason["transport"], by_reason["reason"]) == ("websocket", "signature")
    assert any(d.get("message") == "connection refused" and d["reason"] == "bad signature" for d in documents)
    assert forged not in output and forged.split(".")[2] not in output


def emitted(capsys) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]


def test_publishing_counts_events_in_total_and_by_type_and_the_batch_size(settings, capsys):
    batch = [signal(), signal(), example("risk.alert", settings)]
    assert call("POST", "/events", {"events": batch})[0] == 201
    documents = emitted(capsys)
    [totals] = [d for d in documents if "PublishBatchSize" in d]
    assert (totals["EventsPublished"], totals["PublishBatchSize"], totals["DuplicatePublishes"]) == (
        [3.0],
        [3.0],
        [0.0],
    )
    by_type = {d["type"]: d["EventsPublished"] for d in documents if "EventsPublished" in d and "type" in d}
    assert by_type == {"signal.created": [2.0], "risk.alert": [1.0]}


def test_connection_stats_are_served_once_the_sweep_has_counted_them(capsys):
    from handlers import ws_sweeper

    registry = composition.registry()
    status, body = call("GET", "/stats")
    assert (status, body["error"]["code"]) == (404, "not_found")
    viewer = registry.connect("V", "val", "viewer", int(time.time()) + 3600)
    registry.subscribe(viewer, ["signal.created"])
    registry.connect("A", "ann", "admin", int(time.time()) + 3600)
    assert ws_sweeper.handler({}, LocalContext("ws-sweeper")) == {"closed": 0, "noticed": 0, "open": 2}
    status, body = call("GET", "/stats")
    assert status == 200
    assert (body["total"], body["active"], body["by_role"]) == (2, 1, {"admin": 1, "viewer": 1})
    assert body["by_transport"]["sse"] == {"total": 0, "active": 0, "by_role": {}}
    assert body["subscriptions"]["signal.created"] == 1
    documents = [d for d in emitted(capsys) if "ConnectionsOpen" in d]
    gauges = {(d["transport"], d["role"]): d["ConnectionsOpen"] for d in documents}
    assert (gauges[("websocket", "viewer")], gauges[("sse", "viewer")]) == ([1.0], [0.0])


@pytest.mark.reconnect
def test_the_sweeper_tells_connections_about_to_expire_to_reconnect_and_counts_them(
    settings, monkeypatch, capsys
):
    from handlers import ws_sweeper
    from streaming.connections import ConnectionRegistry

    posted: list[tuple[str, dict[str, Any]]] = []

    class Management:
        def post(self, connection_id: str, data: bytes) -> int:
            posted.append((connection_id, json.loads(data)))
            return 200

        def delete(self, connection_id: str) -> int:
            return 204

    monkeypatch.setattr(ws_sweeper, "management", Management)
    # Connected 100 s ago with a token that expires in 10 s: halfway through its life it is due a notice.
    earlier = ConnectionRegistry(
        composition.dynamodb(), CONNECTIONS_TABLE, settings.roles, clock=lambda: time.time() - 100
    )
    connection = earlier.connect("R", "rae", "viewer", int(time.time()) + 10)
    assert ws_sweeper.handler({}, LocalContext("ws-sweeper")) == {"closed": 0, "noticed": 1, "open": 1}
    assert [(cid, m["type"], m["reason"], m["at"]) for cid, m in posted] == [
        ("R", "reconnect", "token_expiring", connection.expires_at)
    ]
    assert ws_sweeper.handler({}, LocalContext("ws-sweeper"))["noticed"] == 0
    counts = [d["ReconnectNotices"] for d in emitted(capsys) if "ReconnectNotices" in d]
    assert counts == [[1.0], [0.0]]
