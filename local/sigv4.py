"""Checks SigV4 signatures the way AWS does (a Function URL with AWS_IAM auth, the @connections API),
for one local identity."""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.state import LocalCredentials

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request,"
    r"\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
MAX_CLOCK_SKEW_SECONDS = 300


def verify(
    credentials: LocalCredentials,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    service: str = "lambda",
) -> str | None:
    """None when the request is signed by `credentials` for `service`; else the reason it is not."""
    match = _AUTHORIZATION.match(headers.get("authorization", ""))
    if not match:
        return "missing or malformed SigV4 Authorization header"
    if match["key"] != credentials.access_key_id:
        return "unknown access key"
    if match["service"] != service:
        return "signed for another service"
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "missing or malformed X-Amz-Date"
    if abs((datetime.now(UTC) - signed_at).total_seconds()) > MAX_CLOCK_SKEW_SECONDS:
        return "signature expired or from the future"
    signed_names = match["headers"].split(";")
    request = AWSRequest(
        method=method, url=url, data=body, headers={n: headers.get(n, "") for n in signed_names}
    )
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(
        Credentials(credentials.access_key_id, credentials.secret_access_key), service, match["region"]
    )
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    return None if hmac.compare_digest(expected, match["signature"]) else "signature does not match"
