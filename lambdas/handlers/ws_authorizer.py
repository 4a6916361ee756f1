"""API Gateway WebSocket `$connect` REQUEST authorizer: token, role and Origin checked, refusals
audit-logged with their reason. The event holds the token, so it is never logged."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.composition import verifier
from streaming.auth import authorize_connect
from streaming.observability import count, logger, metrics


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    token_verifier, auth = verifier()
    answer, refusal = authorize_connect(event, token_verifier, auth.allowed_origins)
    source_ip = (event.get("requestContext") or {}).get("identity", {}).get("sourceIp")
    if refusal is not None:
        metrics.add_metric(name="ConnectionsRefused", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="AuthFailures", unit=MetricUnit.Count, value=1)
        count("AuthFailures", transport="websocket", reason=refusal.kind)
        logger.warning(
            "connection refused", extra={"audit": True, "reason": refusal.reason, "source_ip": source_ip}
        )
    else:
        metrics.add_metric(name="ConnectionsAuthorized", unit=MetricUnit.Count, value=1)
        logger.info(
            "connection authorized",
            extra={"audit": True, "subject": answer["principalId"], "role": answer["context"]["role"]},
        )
    return answer
