"""The local gateway's `@connections` faults (local.faults): a rule answers exactly the requests it
matches, as many as it is told, and nothing it answers reaches the connection."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from local.faults import ConnectionFaults, FaultRule
from local.gateway import Gateway
from tests.local.test_gateway import authorizer, gateway, routes, signed  # noqa: F401 - fixtures

pytestmark = pytest.mark.faults


@pytest.fixture
def tools(gateway: Gateway) -> TestClient:  # noqa: F811
    return TestClient(gateway.app(), base_url="http://127.0.0.1:8002")


def post(client: TestClient, connection_id: str, message: dict[str, str]) -> int:
    body = json.dumps(message).encode()
    path = f"/local/@connections/{connection_id}"
    return client.post(path, content=body, headers=signed("POST", path, body)).status_code


def test_a_rule_answers_the_next_matching_posts_instead_of_the_connection_then_is_spent(gateway, tools):  # noqa: F811
    client = TestClient(gateway.app(), client=("203.0.113.9", 50000))
    with client.websocket_connect("/?token=good") as ws:
        (connection_id,) = gateway._connections
        rule = {"status": 500, "count": 2, "connection_id": connection_id, "type": "events"}
        assert tools.post("/local/faults", json=rule).status_code == 200
        assert post(client, connection_id, {"type": "pong"}) == 200  # another type: delivered
        assert ws.receive_json() == {"type": "pong"}
        assert [post(client, connection_id, {"type": "events", "n": n}) for n in "abc"] == [500, 500, 200]
        assert ws.receive_json() == {"type": "events", "n": "c"}  # a and b never arrived
        [listed] = tools.get("/local/faults").json()["rules"]
        assert listed["answered"] == 2
        assert tools.delete("/local/faults").json() == {"rules": []}


def test_a_410_rule_also_closes_the_connection(gateway, tools):  # noqa: F811
    client = TestClient(gateway.app(), client=("203.0.113.9", 50000))
    with client.websocket_connect("/?token=good") as ws:
        (connection_id,) = gateway._connections
        tools.post("/local/faults", json={"status": 410})
        assert post(client, connection_id, {"type": "events"}) == 410
        assert ws.receive() == {"type": "websocket.close", "code": 1001, "reason": ""}


def test_a_rule_for_another_connection_or_a_delete_takes_nothing():
    faults = ConnectionFaults()
    faults.add(FaultRule(status=429, connection_id="a="))
    assert faults.take("POST", "b=", b"{}") is None
    assert faults.take("DELETE", "a=", b"") is None
    assert faults.take("POST", "a=", b"{}") is not None
    assert faults.take("POST", "a=", b"{}") is None  # spent


@pytest.mark.parametrize(
    ("host", "content_type", "rule", "status"),
    [
        ("127.0.0.1:8002", "application/json", {"status": 500}, 200),
        ("evil.example", "application/json", {"status": 500}, 421),
        ("127.0.0.1:8002", "text/plain", {"status": 500}, 415),
        ("127.0.0.1:8002", "application/json", {"count": 3}, 400),  # neither status nor hang
        ("127.0.0.1:8002", "application/json", {"status": 200}, 400),
        ("127.0.0.1:8002", "application/json", {"status": 500, "drop": True}, 400),
    ],
)
def test_rules_are_set_from_loopback_in_json_and_checked(tools, host, content_type, rule, status):
    headers = {"host": host, "content-type": content_type}
    assert tools.post("/local/faults", content=json.dumps(rule), headers=headers).status_code == status
