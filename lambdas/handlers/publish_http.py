"""HTTP publish API (Lambda Function URL, AWS_IAM auth): POST events, read them back.

POST /events               one event, {"events": [...]} or a JSON array -> ids, streams, seqs
GET  /events?cursor=&types=&role=&limit=   replay after a cursor (role defaults to admin)
GET  /events/latest?count=&types=&role=    the last N events a role may see
GET  /streams              the head seq of every stream
GET  /stats                the open connections by transport and role (counted every minute)
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.composition import delivery_settings, dynamodb, publish_limit, publisher, settings, store
from streaming import cursor as cursors
from streaming import stats
from streaming.errors import ErrorCode, StreamingError
from streaming.observability import logger, metrics, tracer
from streaming.publish import record
from streaming.replay import replay_after, replay_latest
from streaming.results import Page

app = LambdaFunctionUrlResolver()


@app.post("/events")
def publish() -> Response[str]:
    content_type = (app.current_event.headers or {}).get("content-type", "")
    if not content_type.lower().startswith("application/json"):
        raise StreamingError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send the events as application/json")
    caller = app.current_event.request_context.authorizer.iam.user_arn or "unknown"
    try:
        raw = app.current_event.decoded_body or ""
    except UnicodeDecodeError:  # a binary body arrives base64-encoded, and may not be text at all
        raise StreamingError(ErrorCode.MALFORMED_JSON, "the body is not UTF-8 JSON") from None
    results, is_batch = publisher().publish_body(raw, producer=caller, limit=publish_limit().admit)
    record(results)
    logger.info("published", extra={"events": [r.to_dict() for r in results]})
    body = {"events": [r.to_dict() for r in results]} if is_batch else results[0].to_dict()
    return _json(201 if any(not result.duplicate for result in results) else 200, body)


@app.get("/events")
def read_after() -> Response[str]:
    query, roles = _query(), settings().roles
    types = roles.visible(query.get("role", "admin"), _types(query))
    page = replay_after(
        store(),
        roles,
        query.get("role", "admin"),
        query.get("cursor"),
        types,
        _int(query, "limit", 100),
    )
    return _served(page, types)


@app.get("/events/latest")
def read_latest() -> Response[str]:
    query, roles = _query(), settings().roles
    types = roles.visible(query.get("role", "admin"), _types(query))
    page = replay_latest(store(), roles, query.get("role", "admin"), _int(query, "count", 50), types)
    return _served(page, types)


@app.get("/streams")
def stream_heads() -> Response[str]:
    metrics.add_metric(name="HeadReads", unit=MetricUnit.Count, value=1)
    return _json(200, {"streams": store().heads()})


@app.get("/stats")
def connection_stats() -> Response[str]:
    counted = stats.load(dynamodb(), delivery_settings().connections_table)
    if counted is None:
        raise StreamingError(
            ErrorCode.NOT_FOUND, "no connection stats yet: the sweep counts them every minute"
        )
    return _json(200, dict(counted))


@app.route("/events", method=["PUT", "PATCH", "DELETE"])
def wrong_method() -> Response[str]:
    raise StreamingError(ErrorCode.METHOD_NOT_ALLOWED, "use POST to publish and GET to read")


@app.not_found
def not_found(_: Exception) -> Response[str]:
    metrics.add_metric(name="RequestsRejected", unit=MetricUnit.Count, value=1)
    return _error(StreamingError(ErrorCode.NOT_FOUND, "no such route; see docs/publishing.md"))


@app.exception_handler(StreamingError)  # type: ignore[untyped-decorator]
def rejected(error: StreamingError) -> Response[str]:
    metrics.add_metric(name="RequestsRejected", unit=MetricUnit.Count, value=1)
    logger.warning("rejected", extra={"code": error.error.code, "reason": error.message})
    return _error(error)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def failed(error: Exception) -> Response[str]:
    logger.exception("internal error")
    metrics.add_metric(name="InternalErrors", unit=MetricUnit.Count, value=1)
    return _error(StreamingError(ErrorCode.INTERNAL_ERROR, "internal error; the request id is in the logs"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


def _query() -> dict[str, str]:
    return dict(app.current_event.query_string_parameters or {})


def _types(query: dict[str, str]) -> list[str] | None:
    return [t for t in query["types"].split(",") if t] if query.get("types") else None


def _int(query: dict[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name, default))
    except ValueError:
        raise StreamingError(ErrorCode.INVALID_QUERY, f"{name} must be an integer") from None


def _served(page: Page, types: frozenset[str]) -> Response[str]:
    """The page; each event's `prev` is the previous event of its stream among `types`."""
    metrics.add_metric(name="EventsReplayed", unit=MetricUnit.Count, value=len(page.events))
    return _json(
        200,
        {
            "events": [event.to_dict(types) for event in page.events],
            "cursor": cursors.encode(page.cursor),
            "more": page.more,
            "truncated": page.truncated,
        },
    )


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body),
        headers=headers,
    )


def _error(error: StreamingError) -> Response[str]:
    return _json(error.status, error.to_body(), error.headers)
