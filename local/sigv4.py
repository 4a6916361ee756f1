"""Checks SigV4 signatures the way AWS does (a Function URL with AWS_IAM auth, the @connections API),
for one local identity.

The canonical request is built here as botocore's `SigV4Auth` builds it (tests/local/test_sigv4.py
checks the two agree), without its request and header objects: every fan-out post to the local gateway
is checked, and botocore took about 40 us of the gateway's CPU per post (docs/performance.md, "Where the
latency goes")."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import SplitResult, quote, urlsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST
from botocore.utils import normalize_url_path

from local.state import LocalCredentials
from streaming.management import signature

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
    canonical = canonical_request(method, url, headers, match["headers"].split(";"), body)
    _, expected = signature(credentials.secret_access_key, amz_date, match["region"], service, canonical)
    return None if hmac.compare_digest(expected, match["signature"]) else "signature does not match"


def canonical_request(
    method: str, url: str, headers: dict[str, str], signed_names: list[str], body: bytes
) -> str:
    """The canonical request of a request whose `signed_names` headers (lower case) were signed, as
    botocore's SigV4Auth.canonical_request makes it: the path percent-encoded once more, the query's
    pairs sorted as sent, each header's value with its whitespace runs collapsed, `host` signed always."""
    parts = urlsplit(url)
    names = {name for name in signed_names if name not in SIGNED_HEADERS_BLACKLIST}
    values = {name: headers.get(name, "") for name in names}
    values.setdefault("host", _host(parts))
    pairs = sorted(pair.partition("=")[::2] for pair in parts.query.split("&")) if parts.query else []
    checksum = values.get("x-amz-content-sha256", hashlib.sha256(body).hexdigest())
    return "\n".join(
        [
            method.upper(),
            quote(normalize_url_path(parts.path), safe="/~"),
            "&".join(f"{key}={value}" for key, value in pairs),
            *(f"{name}:{' '.join(values[name].split())}" for name in sorted(values)),
            "",
            ";".join(sorted(values)),
            checksum,
        ]
    )


def _host(parts: SplitResult) -> str:
    """The `host` botocore signs when none was sent: lower case, without a default port."""
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else str(parts.hostname)
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host
