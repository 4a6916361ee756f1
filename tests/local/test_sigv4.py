"""local.sigv4 checks requests as AWS does: its canonical request is botocore's, for any request botocore
signs, so what it accepts and refuses is what botocore's signer and verifier agree on."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from local.sigv4 import canonical_request, verify
from local.state import LocalCredentials

pytestmark = pytest.mark.security
CREDENTIALS = LocalCredentials("AKIDLOCALSIGV4", "sigv4-test-secret")

segments = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
pairs = st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9_.~-]{1,8}", fullmatch=True), st.text(max_size=8)))
header_values = st.from_regex(r"[!-~]{1,6}( {1,3}[!-~]{1,6}){0,3}", fullmatch=True)  # runs of spaces inside


@st.composite
def requests(draw: st.DrawFn) -> AWSRequest:
    """A request as a client sends it: path and query percent-encoded once, a few headers of its own."""
    path = "/" + "/".join(quote(segment, safe="") for segment in draw(st.lists(segments, max_size=3)))
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in draw(pairs))
    port = draw(st.sampled_from(["", ":8002"]))
    headers = {f"x-custom-{i}": value for i, value in enumerate(draw(st.lists(header_values, max_size=2)))}
    if draw(st.booleans()):
        headers["user-agent"] = "botocore leaves this unsigned"
    url = f"http://127.0.0.1{port}{path}" + (f"?{query}" if query else "")
    method = draw(st.sampled_from(["GET", "POST", "DELETE"]))
    return AWSRequest(method=method, url=url, data=draw(st.binary(max_size=64)), headers=headers)


def signed(request: AWSRequest, service: str) -> dict[str, str]:
    """Signs `request` with botocore, as a client would; the headers as a server receives them."""
    credentials = Credentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key)
    SigV4Auth(credentials, service, "eu-west-1").add_auth(request)
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers.setdefault("host", request.url.split("/")[2])  # an HTTP client sends it
    return headers


@settings(max_examples=200, deadline=None)
@given(requests(), st.sampled_from(["execute-api", "lambda"]))
def test_canonical_request_is_botocores_and_its_signatures_verify(request, service):
    body = request.data
    headers = signed(request, service)
    signed_names = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    # What botocore makes of the request as received, its signed headers only.
    received = AWSRequest(
        method=request.method, url=request.url, data=body, headers={n: headers[n] for n in signed_names}
    )
    expected = SigV4Auth(Credentials("a", "b"), service, "eu-west-1").canonical_request(received)
    assert canonical_request(request.method, request.url, headers, signed_names, body) == expected
    assert verify(CREDENTIALS, request.method, request.url, headers, body, service=service) is None
    assert verify(CREDENTIALS, request.method, request.url, headers, body + b"!", service=service) == (
        "signature does not match"
    )


@settings(max_examples=50, deadline=None)
@given(requests())
def test_another_secret_method_or_path_does_not_verify(request):
    headers = signed(request, "execute-api")
    other = LocalCredentials(CREDENTIALS.access_key_id, "another-secret")
    refused = "signature does not match"
    assert verify(other, request.method, request.url, headers, request.data, service="execute-api") == refused
    method = "PUT" if request.method != "PUT" else "GET"
    assert verify(CREDENTIALS, method, request.url, headers, request.data, service="execute-api") == refused
    moved = request.url.replace("127.0.0.1", "127.0.0.1/moved", 1)
    assert verify(CREDENTIALS, request.method, moved, headers, request.data, service="execute-api") == refused
