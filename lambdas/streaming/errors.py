"""Stable error codes for every entry point. docs/publishing.md (HTTP) and docs/protocol.md (WebSocket)
list them; a test keeps the docs and this enum in step."""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """Each code with the HTTP status it is answered with."""

    MALFORMED_JSON = ("malformed_json", 400)
    INVALID_ENVELOPE = ("invalid_envelope", 400)
    MISSING_ID = ("missing_id", 400)
    INVALID_ID = ("invalid_id", 400)
    UNKNOWN_TYPE = ("unknown_type", 400)
    UNSUPPORTED_SCHEMA_VERSION = ("unsupported_schema_version", 400)
    SCHEMA_VIOLATION = ("schema_violation", 400)
    EMPTY_BATCH = ("empty_batch", 400)
    DUPLICATE_ID_IN_BATCH = ("duplicate_id_in_batch", 400)
    INVALID_CURSOR = ("invalid_cursor", 400)
    INVALID_QUERY = ("invalid_query", 400)
    UNKNOWN_ROLE = ("unknown_role", 400)
    UNKNOWN_ACTION = ("unknown_action", 400)
    INVALID_MESSAGE = ("invalid_message", 400)
    INVALID_TOKEN = ("invalid_token", 401)
    TOKEN_EXPIRED = ("token_expired", 401)
    ORIGIN_NOT_ALLOWED = ("origin_not_allowed", 403)
    TYPE_NOT_ALLOWED = ("type_not_allowed", 403)
    NOT_FOUND = ("not_found", 404)
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405)
    ID_CONFLICT = ("id_conflict", 409)
    TOO_MANY_STREAMS = ("too_many_streams", 429)
    PUBLISH_IN_PROGRESS = ("publish_in_progress", 409)
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413)
    BATCH_TOO_LARGE = ("batch_too_large", 413)
    MESSAGE_TOO_LARGE = ("message_too_large", 413)
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415)
    RATE_LIMITED = ("rate_limited", 429)
    STREAM_CONTENDED = ("stream_contended", 503)
    STORE_UNAVAILABLE = ("store_unavailable", 503)
    INTERNAL_ERROR = ("internal_error", 500)

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def status(self) -> int:
        return self.value[1]


class StreamingError(Exception):
    """An error with a stable code, a human message and optional machine-readable details."""

    def __init__(self, error: ErrorCode, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.details = details or []

    @property
    def status(self) -> int:
        return self.error.status

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides its JSON body."""
        return {}

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.error.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class RateLimited(StreamingError):
    """A refusal the caller can retry after `retry_after` whole seconds (HTTP Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
