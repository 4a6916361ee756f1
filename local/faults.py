"""Faults of the local gateway's `@connections` API, off until asked for: what API Gateway answers
when it throttles (429), fails (500) or is slow, and when a connection is gone (410), so the handlers'
answers to them can be watched end to end (tests/faults/, docs/reliability.md "Faults").

    POST   /local/faults  {"status": 500, "count": 4, "connection_id": "...", "type": "events"}
    POST   /local/faults  {"hang_seconds": 5, "count": 1}      # held, then 504, never delivered
    GET    /local/faults  the rules, each with how many requests it has answered
    DELETE /local/faults  every rule removed

A rule answers the next `count` POSTs (to `connection_id`, or to any connection; only messages whose
JSON `type` is `type`, when given) instead of the connection: after `hang_seconds`, with `status`
(504 after a hang, else required). Nothing it answers is delivered. A 410 also closes the connection
(1001): API Gateway holds no connection it answers 410 for. The routes answer loopback host names and
JSON bodies only, so no web page can set a fault (a cross-site JSON POST needs a preflight nobody
answers).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.serving import LOOPBACK_NAMES

HUNG_STATUS = 504  # what a hung request is answered with, once held long enough


class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: int | None = Field(default=None, ge=400, le=599)
    hang_seconds: float = Field(default=0.0, ge=0, le=60)
    count: int = Field(default=1, ge=1, le=10_000)
    connection_id: str | None = None
    type: str | None = None

    @model_validator(mode="after")
    def _answers(self) -> FaultRule:
        if self.status is None and not self.hang_seconds:
            raise ValueError("a rule needs a status, hang_seconds, or both")
        return self


@dataclass
class _Active:
    rule: FaultRule
    answered: int = 0


@dataclass(frozen=True)
class Fault:
    """How one request is answered instead of being delivered."""

    status: int
    hang_seconds: float


class ConnectionFaults:
    def __init__(self) -> None:
        self._rules: list[_Active] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(_Active(rule))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**active.rule.model_dump(), "answered": active.answered} for active in self._rules]

    def take(self, method: str, connection_id: str, body: bytes) -> Fault | None:
        """The fault that answers this request, if a rule with requests left matches it (the first)."""
        if method != "POST" or not self._rules:
            return None
        kind = _type_of(body)
        with self._lock:
            for active in self._rules:
                rule = active.rule
                if active.answered >= rule.count:
                    continue
                if rule.connection_id not in (None, connection_id) or rule.type not in (None, kind):
                    continue
                active.answered += 1
                status = rule.status if rule.status is not None else HUNG_STATUS
                return Fault(status, rule.hang_seconds)
        return None

    def routes(self) -> list[Route]:
        return [Route("/local/faults", self._endpoint, methods=["GET", "POST", "DELETE"])]

    async def _endpoint(self, request: Request) -> Response:
        if (request.url.hostname or "") not in LOOPBACK_NAMES:
            return JSONResponse({"error": "loopback host names only"}, status_code=421)
        if request.method == "POST":
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return JSONResponse({"error": "send the rule as application/json"}, status_code=415)
            try:
                self.add(FaultRule.model_validate_json(await request.body()))
            except ValidationError as invalid:
                problems = [error["msg"] for error in invalid.errors(include_url=False)]
                return JSONResponse({"error": problems}, status_code=400)
        elif request.method == "DELETE":
            self.clear()
        return JSONResponse({"rules": self.listing()}, headers={"Cache-Control": "no-store"})


def _type_of(body: bytes) -> str | None:
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) else None
