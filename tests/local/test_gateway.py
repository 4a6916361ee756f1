"""The local gateway's side of the API Gateway WebSocket contract, checked against Powertools' models
of API Gateway's events: what the deployed handlers receive locally is what they receive in AWS."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import (
    APIGatewayWebSocketConnectEventModel,
    APIGatewayWebSocketDisconnectEventModel,
    APIGatewayWebSocketMessageEventModel,
)
from botocore.credentials import Credentials
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from uvicorn.protocols.utils import ClientDisconnected

from local.gateway import Gateway, _closed_by, _Connection
from local.lambda_runtime import LocalFunction
from local.state import LocalCredentials
from streaming.management import ManagementApi

pytestmark = pytest.mark.connections


class Recorder:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.events: list[dict[str, Any]] = []
        self.answer = answer

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return self.answer

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 30
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.events


def authorizer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    allowed = event["queryStringParameters"].get("token") == "good"
    return {
        "principalId": "alice" if allowed else "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow" if allowed else "Deny"}],
        },
        "context": {"sub": "alice", "role": "analyst", "exp": 1795776688} if allowed else {},
    }


@pytest.fixture
def routes() -> Recorder:
    return Recorder({"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "streaming.v1"}})


@pytest.fixture
def gateway(routes: Recorder) -> Gateway:
    return Gateway(
        LocalFunction("ws-authorizer", authorizer),
        LocalFunction("websocket", routes, concurrency=4),
        LocalCredentials("local", "local"),
        host="127.0.0.1:8002",
    )


@pytest.fixture
def client(gateway: Gateway) -> TestClient:
    return TestClient(gateway.app(), client=("203.0.113.9", 50000))


def signed(method: str, path: str, body: bytes = b"") -> dict[str, str]:
    class Frozen:
        def get_frozen_credentials(self) -> Credentials:
            return Credentials("local", "local")

    return ManagementApi("http://testserver/local", "us-east-1", Frozen())._sign(method, path, body)


def test_connect_messages_and_disconnect_arrive_in_api_gateways_shapes(client, routes):
    with client.websocket_connect("/?token=good", subprotocols=["streaming.v1", "token.x"]) as ws:
        assert ws.accepted_subprotocol == "streaming.v1"
        for body in ('{"action":"subscribe","types":["risk.alert"]}', "not json", '{"action":"dance"}'):
            ws.send_text(body)
        routes.wait_for(4)
        # The gateway closes a message over 128 KB (1009) and runs $disconnect while the test client
        # is still connected (its teardown could cancel the app before $disconnect ran).
        ws.send_text("x" * (128 * 1024 + 1))
        events = routes.wait_for(5)

    connect, *messages, disconnect = events
    assert disconnect["requestContext"]["disconnectStatusCode"] == 1009
    parsed = APIGatewayWebSocketConnectEventModel.model_validate(connect)
    assert parsed.request_context.route_key == "$connect"
    assert connect["queryStringParameters"] == {"token": "good"}
    assert connect["requestContext"]["authorizer"] == {
        "principalId": "alice",
        "sub": "alice",
        "role": "analyst",
        "exp": 1795776688,
    }
    assert sorted(m["requestContext"]["routeKey"] for m in messages) == ["$default", "$default", "subscribe"]
    for message in messages:
        APIGatewayWebSocketMessageEventModel.model_validate(message)
        assert message["requestContext"]["authorizer"]["role"] == "analyst"
        assert message["requestContext"]["connectionId"] == connect["requestContext"]["connectionId"]
    parsed_disconnect = APIGatewayWebSocketDisconnectEventModel.model_validate(disconnect)
    assert parsed_disconnect.request_context.connection_id == connect["requestContext"]["connectionId"]


def test_a_denied_handshake_never_reaches_the_routes(client, routes):
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/?token=bad"):
        pass
    assert routes.events == []


def test_the_management_api_refuses_unsigned_requests_and_answers_410_for_unknown_connections(client):
    assert client.post("/local/@connections/abc%3D", content=b"{}").status_code == 403
    headers = signed("POST", "/local/@connections/abc%3D", b"{}")
    answer = client.post("/local/@connections/abc%3D", content=b"{}", headers=headers)
    assert answer.status_code == 410


def departed() -> WebSocket:
    """A connection whose client has just left, before the gateway noticed (its $disconnect is on the
    way): sending raises what uvicorn raises then, which Starlette turns into WebSocketDisconnect 1006."""

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Any) -> None:
        raise ClientDisconnected()

    websocket = WebSocket({"type": "websocket", "path": "/", "headers": []}, receive, send)
    websocket.client_state = websocket.application_state = WebSocketState.CONNECTED
    return websocket


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_posting_to_or_closing_a_client_that_has_just_left_answers_410_and_raises_nothing(
    gateway, client, method
):
    gateway._connections["gone="] = _Connection(departed(), "203.0.113.9", "test")
    body = b'{"type":"pong"}' if method == "POST" else b""
    headers = signed(method, "/local/@connections/gone%3D", body)
    # TestClient re-raises what the app raises: before, WebSocketDisconnect(1006) escaped the handler
    # and uvicorn logged "Exception in ASGI application" with its traceback.
    answer = client.request(method, "/local/@connections/gone%3D", content=body, headers=headers)
    assert answer.status_code == 410


def test_a_connection_lost_without_a_close_frame_is_reported_as_1006():
    assert _closed_by({"type": "websocket.disconnect", "code": 1005}) == (1006, "Connection lost")
    assert _closed_by({"type": "websocket.disconnect", "code": 1000, "reason": ""}) == (1000, "Client closed")
    assert _closed_by({"type": "websocket.disconnect", "code": 1001, "reason": "bye"}) == (1001, "bye")
    assert _closed_by({"type": "websocket.disconnect", "code": 1012}) == (1012, "Client closed")


def limited_gateway(routes: Recorder, **limits: float) -> TestClient:
    gateway = Gateway(
        LocalFunction("ws-authorizer", authorizer),
        LocalFunction("websocket", routes, concurrency=4),
        LocalCredentials("local", "local"),
        host="127.0.0.1:8002",
        **limits,
    )
    return TestClient(gateway.app(), client=("203.0.113.9", 50000))


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"connection_limit_seconds": 1, "idle_timeout_seconds": 600}, "Connection lifetime exceeded"),
        ({"connection_limit_seconds": 7200, "idle_timeout_seconds": 1}, "Idle timeout"),
    ],
    ids=["two-hour limit", "idle timeout"],
)
def test_the_gateway_closes_with_1001_at_its_limits_and_runs_disconnect(routes, limits, reason):
    with limited_gateway(routes, **limits).websocket_connect("/?token=good") as ws:
        ws.send_text('{"action":"ping"}')
        connect, message, disconnect = routes.wait_for(3)  # $disconnect while the client is connected
        assert ws.receive() == {"type": "websocket.close", "code": 1001, "reason": ""}
    assert message["requestContext"]["routeKey"] == "ping"
    context = APIGatewayWebSocketDisconnectEventModel.model_validate(disconnect).request_context
    assert context.connection_id == connect["requestContext"]["connectionId"]
    assert (disconnect["requestContext"]["disconnectStatusCode"], context.disconnect_reason) == (1001, reason)


def test_a_message_from_the_client_moves_the_idle_timeout_but_not_the_connection_limit():
    connection = _Connection(departed(), "203.0.113.9", "test", connected_at=1000.0, last_active_at=1000.0)
    assert connection.limit(lifetime=7200, idle=600) == (1600.0, "Idle timeout")
    connection.last_active_at = 6000.0  # a message from the client
    assert connection.limit(lifetime=7200, idle=600) == (6600.0, "Idle timeout")
    connection.last_active_at = 7700.0
    assert connection.limit(lifetime=7200, idle=600) == (8200.0, "Connection lifetime exceeded")


def test_the_local_debug_route_counts_the_connections_it_holds(client):
    """GET /local/debug (local only, for the soak run): this process, and a connection while it is open."""
    before = client.get("/local/debug").json()
    with client.websocket_connect("/?token=good", subprotocols=["streaming.v1", "token.x"]) as ws:
        ws.send_json({"action": "ping"})
        during = client.get("/local/debug").json()
    assert before["pid"] == during["pid"] == os.getpid()
    assert (before["websockets"], during["websockets"]) == (0, 1)
    assert during["tasks"] > 0 and during["threads"] > 0
    assert client.get("/local/debug").json()["websockets"] == 0
