"""API Gateway WebSocket routes: `$connect`, `$disconnect`, `$default` and the protocol's actions
(subscribe, unsubscribe, ping, replay). Answers go out through the `@connections` API
(docs/protocol.md); the integration's own response only completes the route."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.composition import session as websocket_session
from streaming.auth import SUBPROTOCOL, token_from_request
from streaming.observability import count, logger, metrics, tracer
from streaming.session import disconnect_kind

OK = {"statusCode": 200}


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event["requestContext"]
    route, connection_id = request["routeKey"], request["connectionId"]
    logger.append_keys(connection_id=connection_id, route=route)
    session = websocket_session()
    if route == "$connect":
        connection = session.connect(connection_id, request["authorizer"])
        metrics.add_metric(name="Connections", unit=MetricUnit.Count, value=1)
        count("ConnectionsOpened", role=connection.role, transport="websocket")
        logger.info("connected", extra={"role": connection.role, "expires_at": connection.expires_at})
        return _accept(event)
    if route == "$disconnect":
        session.disconnect(connection_id)
        metrics.add_metric(name="Disconnections", unit=MetricUnit.Count, value=1)
        status = request.get("disconnectStatusCode")
        count("ConnectionsClosed", transport="websocket")
        count("Disconnects", transport="websocket", kind=disconnect_kind(status))
        logger.info("disconnected", extra={"status": status, "reason": request.get("disconnectReason")})
        return OK
    metrics.add_metric(name="MessagesReceived", unit=MetricUnit.Count, value=1)
    session.receive(connection_id, event.get("body"))
    return OK


def _accept(event: dict[str, Any]) -> dict[str, Any]:
    """Browsers drop a connection whose offered subprotocol is not answered."""
    _, subprotocol = token_from_request(event.get("headers") or {}, {})
    if subprotocol is None:
        return OK
    return {**OK, "headers": {"Sec-WebSocket-Protocol": SUBPROTOCOL}}
