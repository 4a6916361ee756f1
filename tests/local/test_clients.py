"""The publish client and the in-process publisher entry point."""

from __future__ import annotations

import json

from botocore.credentials import Credentials

from clients.publisher import PublishClient
from local.sigv4 import verify
from local.state import LocalCredentials
from tests.conftest import signal

CREDS = LocalCredentials("LOCALTESTKEY", "test-secret")


def test_region_comes_from_a_function_url():
    client = PublishClient(
        "https://abcdefg.lambda-url.eu-central-1.on.aws/", credentials=Credentials("AKID", "secret")
    )
    assert client.region == "eu-central-1"


def test_requests_carry_a_sigv4_signature_the_local_endpoint_accepts(monkeypatch):
    sent = {}

    def capture(method, url, content, headers):
        sent.update(method=method, url=url, body=content, headers={k.lower(): v for k, v in headers.items()})

    client = PublishClient(
        "http://127.0.0.1:9/",
        region="us-east-1",
        credentials=Credentials(CREDS.access_key_id, CREDS.secret_access_key),
    )
    monkeypatch.setattr(client._http, "request", capture)
    body = json.dumps(signal()).encode()
    client.request("POST", "events?x=1", body=body)
    sent["headers"]["host"] = "127.0.0.1:9"
    assert verify(CREDS, sent["method"], sent["url"], sent["headers"], sent["body"]) is None
    assert (
        verify(CREDS, sent["method"], sent["url"], sent["headers"], body + b" ") == "signature does not match"
    )
    assert verify(LocalCredentials("OTHER", "x"), sent["method"], sent["url"], sent["headers"], body) == (
        "unknown access key"
    )
