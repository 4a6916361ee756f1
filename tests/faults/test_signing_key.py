"""The signing key unreadable: Secrets Manager refusing GetSecretValue (access denied, throttled past
its retries) or the secret deleted, through the `$connect` authorizer and the SSE app on a moto server.
Each new connection is refused as the server's fault (WebSocket: 403 at the handshake; SSE: 500
`internal_error`), counted as AuthFailures reason `key_unavailable`, with neither key nor token in the
output; connections already open are not touched; once the key is readable again, new connections
succeed at once (a failed read is never cached)."""

# ruff: noqa: F811 - the fixtures `signing_key`, `dynamodb` and `moto_url` come from tests/faults/in_process.py

from __future__ import annotations

from collections.abc import Callable

import pytest
from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

from handlers import ws_authorizer
from local.lambda_runtime import LocalContext
from streaming import cursor as cursors
from tests.conftest import signal
from tests.faults.in_process import (  # noqa: F401 - fixtures among them
    KEY,
    SigningKey,
    WebSocketConnection,
    dynamodb,
    event_ids,
    metric_in,
    moto_url,
    signing_key,
    sse,
    token,
)
from tests.faults.injection import ACCESS_DENIED, THROTTLING
from tests.local.test_handlers import call

pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("handler_environment")]
ATTEMPTS_PER_READ = 5  # a default client (legacy retry mode): 4 retries


def connect(bearer: str) -> str:
    """The authorizer's decision on a `$connect` with this token: Allow or Deny."""
    event = {
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:api/dev/$connect",
        "headers": {"Sec-WebSocket-Protocol": f"streaming.v1, token.{bearer}"},
        "requestContext": {"identity": {"sourceIp": "203.0.113.9"}},
    }
    answer = ws_authorizer.handler(event, LocalContext("ws-authorizer"))
    return str(answer["policyDocument"]["Statement"][0]["Effect"])


def deleted(key: SigningKey) -> Callable[[], None]:
    """The secret scheduled for deletion (GetSecretValue refuses it); restoring it heals."""
    key.client.delete_secret(SecretId=key.arn, RecoveryWindowInDays=7)
    return lambda: key.client.restore_secret(SecretId=key.arn)


def refused(code: str) -> Callable[[SigningKey], Callable[[], None]]:
    def outage(key: SigningKey) -> Callable[[], None]:
        key.faults.refuse("GetSecretValue", code, times=float("inf"))
        return key.faults.heal

    return outage


@pytest.mark.parametrize(
    "outage",
    [refused(ACCESS_DENIED), refused(THROTTLING), deleted],
    ids=["access denied", "throttled", "secret deleted"],
)
def test_an_unreadable_key_refuses_new_connections_as_the_servers_fault_and_they_succeed_once_it_is_back(
    signing_key, outage, monkeypatch, capsys, caplog
):
    bearer = token()
    open_before = WebSocketConnection(monkeypatch)  # authorized before the outage
    open_before.route("$connect")
    heal = outage(signing_key)

    assert connect(bearer) == "Deny"
    refusal = sse(bearer)
    assert (refusal.status_code, refusal.json()["error"]["code"]) == (500, "internal_error")
    output = capsys.readouterr().out
    assert metric_in(output, "AuthFailures", transport="websocket", reason="key_unavailable") == 1
    assert metric_in(output, "AuthFailures", transport="sse", reason="key_unavailable") == 1
    assert metric_in(output, "AuthFailures") == 4  # those, and the totals the alarm watches
    [reason] = [r.reason for r in caplog.records if r.getMessage() == "connection refused"]  # type: ignore[attr-defined]
    assert reason.startswith("signing key unavailable (")
    logged = output + caplog.text
    assert KEY not in logged and bearer not in logged and bearer.split(".")[2] not in logged
    # Bounded: each read is one call of at most its retries, and the failure is not retried further.
    assert signing_key.faults.attempts["GetSecretValue"] <= 2 * ATTEMPTS_PER_READ
    attempts = signing_key.faults.attempts["GetSecretValue"]
    print(f"key unreadable: {attempts} GetSecretValue attempts for 2 refusals")

    # The connection opened before is answered as ever: its token was checked once, at $connect.
    subscribed = open_before.route("subscribe", {"action": "subscribe", "types": ["signal.created"]})
    assert subscribed["type"] == "subscribed"

    heal()
    assert connect(bearer) == "Allow"
    published = signal()
    assert call("POST", "/events", published)[0] == 201
    streamed = sse(bearer, cursor=cursors.encode({"market": 0}))  # from the start
    assert (streamed.status_code, event_ids(streamed)) == (200, [published["id"]])


def test_a_key_read_before_an_outage_serves_new_connections_until_its_cache_expires(signing_key, capsys):
    """The functions keep the key for 5 minutes (composition.SECRET_MAX_AGE_SECONDS): an outage shorter
    than that is not seen at all; past it, new connections are refused until the key is back."""
    bearer = token()
    assert connect(bearer) == "Allow"  # reads the key
    heal = refused(ACCESS_DENIED)(signing_key)
    assert [connect(bearer) for _ in range(3)] == ["Allow"] * 3
    assert signing_key.faults.attempts["GetSecretValue"] == 1  # the first read only
    DEFAULT_PROVIDERS["secrets"].clear_cache()  # what 5 minutes do
    assert connect(bearer) == "Deny"
    assert metric_in(capsys.readouterr().out, "AuthFailures", reason="key_unavailable") == 1
    heal()
    assert connect(bearer) == "Allow"
