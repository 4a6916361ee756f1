"""Faults injected into a real botocore client: chosen attempts of an operation are answered, before
they leave the client, with the error the service would answer, which botocore then parses and retries
exactly as it would the service's own (its retry mode, attempts and backoff). Every attempt is counted.

The client must talk to a server (the local stack's moto server): with moto in-process, moto answers
the same `before-send` event, and a refused write would still reach its backend.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse

# How DynamoDB and Secrets Manager (JSON protocols) answer: the error's type and message, and a status.
THROTTLED = "ProvisionedThroughputExceededException"
THROTTLING = "ThrottlingException"
CONDITION_FAILED = "ConditionalCheckFailedException"
ACCESS_DENIED = "AccessDeniedException"
NOT_FOUND = "ResourceNotFoundException"


@dataclass
class _Rule:
    operation: str
    code: str
    times: float  # attempts still to refuse
    when: Callable[[dict[str, Any]], bool]
    status: int


class _Body(io.BytesIO):
    def stream(self, **_: Any) -> Any:
        yield self.read()


class Faults:
    """`refuse(...)` the next attempts of an operation of `client`; `attempts` and `refused` count,
    by operation, every attempt the client made and those answered with a fault."""

    def __init__(self, client: Any) -> None:
        self.attempts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._rules: list[_Rule] = []
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register_first(f"before-send.{service}", self._before_send)

    def refuse(
        self,
        operation: str,
        code: str,
        times: float = 1,
        *,
        when: Callable[[dict[str, Any]], bool] = lambda request: True,
        status: int = 400,
    ) -> None:
        """Answer the next `times` attempts of `operation` whose request `when` accepts with `code`
        (`float("inf")`: every one, until `heal()`)."""
        self._rules.append(_Rule(operation, code, times, when, status))

    def heal(self) -> None:
        self._rules.clear()

    def _before_send(self, request: AWSPreparedRequest, event_name: str, **_: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        self.attempts[operation] += 1
        body = json.loads(request.body or b"{}")
        for rule in self._rules:
            if rule.operation == operation and rule.times > 0 and rule.when(body):
                rule.times -= 1
                self.refused[operation] += 1
                answer = {"__type": f"com.amazonaws.faults#{rule.code}", "message": "injected fault"}
                headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "fault"}
                return AWSResponse(request.url, rule.status, headers, _Body(json.dumps(answer).encode()))
        return None
