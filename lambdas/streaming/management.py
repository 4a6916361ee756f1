"""The stage's `@connections` management API: post to and close connections.

Every delivery is one signed HTTP request, so its client CPU sets both latency and how many fan-out
workers a deployment needs. boto3's `post_to_connection` costs about 1.3 ms of CPU per call, botocore's
SigV4 signer alone about 0.2 ms. This client signs with SigV4 directly (the signing key is derived once
a day, the canonical request has three headers) and sends over kept-alive HTTP/1.1 connections
(`http1`), one per thread, reused across invocations (docs/performance.md). Its signatures are
checked against botocore's in the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, urlsplit

from streaming import http1

SERVICE = "execute-api"
GONE = 410  # the connection no longer exists
RETRY_DELAYS_SECONDS = (0.05, 0.2, 0.8)  # then give up on that message: the client can replay
_ALGORITHM = "AWS4-HMAC-SHA256"
# API Gateway answers in milliseconds; a connection that does not answer in this is given up on, so one
# black-holed endpoint cannot hold a fan-out worker past the publish function's timeout.
_TIMEOUT_SECONDS = 3


class Poster(Protocol):
    def post(self, connection_id: str, data: bytes) -> int:
        """Send one message to a connection; the HTTP status (0 when the request itself failed)."""


class Management(Poster, Protocol):
    def delete(self, connection_id: str) -> int:
        """Close a connection; the HTTP status (410 if it is already gone)."""


class Posted(NamedTuple):
    status: int  # the last answer's HTTP status (0 when the request itself failed)
    retries: int


def post_with_retry(
    poster: Poster, connection_id: str, message: bytes, sleep: Callable[[float], None] = time.sleep
) -> Posted:
    """Post one message, retrying throttling (429) and server errors with bounded backoff. A request
    whose fate is unknown (0) is not retried: it could arrive twice."""
    status = poster.post(connection_id, message)
    for retries, delay in enumerate(RETRY_DELAYS_SECONDS):
        if status != 429 and status < 500:
            return Posted(status, retries)
        sleep(delay)
        status = poster.post(connection_id, message)
    return Posted(status, len(RETRY_DELAYS_SECONDS))


class ManagementApi:
    def __init__(self, endpoint_url: str, region: str, credentials: Any) -> None:
        """`endpoint_url` is the stage's callback URL, https://{api}.execute-api.{region}.{suffix}/{stage};
        `credentials` a botocore credentials object (refreshable ones are refreshed when due)."""
        parts = urlsplit(endpoint_url.rstrip("/"))
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"not a management endpoint URL: {endpoint_url!r}")
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._netloc = parts.netloc
        self._prefix = parts.path
        self._region = region
        self._credentials = credentials
        self._local = threading.local()

    def post(self, connection_id: str, data: bytes) -> int:
        return self._request("POST", connection_id, data)[0]

    def delete(self, connection_id: str) -> int:
        """Close the connection; 410 if it is already gone."""
        return self._request("DELETE", connection_id, b"")[0]

    def _request(self, method: str, connection_id: str, body: bytes) -> tuple[int, bytes]:
        path = f"{self._prefix}/@connections/{quote(connection_id, safe='')}"
        headers = self._sign(method, path, body)
        for attempt in range(2):
            reused = self._reusable()
            try:
                return self._connection().request(method, path, headers, body)
            except http1.Closed:
                self._drop()
                # A kept-alive connection the server had closed while idle: the request was not
                # processed, so it is sent once more on a new connection.
                if not reused or attempt:
                    return 0, b""
            except OSError:
                # Refused, unreachable, timed out or answered with garbage: whether it arrived is
                # unknown, so it is not sent again (a second copy would be a duplicate frame).
                self._drop()
                return 0, b""
        return 0, b""

    def _reusable(self) -> bool:
        """Whether this thread has an open connection that has carried a request before."""
        connection: http1.Connection | None = getattr(self._local, "connection", None)
        return connection is not None and connection.open

    def _drop(self) -> None:
        connection: http1.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
        self._local.connection = None

    def _sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """SigV4 headers for one request (AWS Signature Version 4, as for every service but S3)."""
        credentials = self._credentials.get_frozen_credentials()
        amz_date = _amz_date(int(time.time()))
        headers = {"host": self._netloc, "x-amz-date": amz_date}
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        names = sorted(headers)
        signed_headers = ";".join(names)
        canonical = "\n".join(
            [
                method,
                quote(path, safe="/~"),  # the path as sent, percent-encoded once more
                "",
                *(f"{name}:{headers[name]}" for name in names),
                "",
                signed_headers,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope, signed = signature(credentials.secret_key, amz_date, self._region, SERVICE, canonical)
        headers["authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signed}"
        )
        return headers

    def _connection(self) -> http1.Connection:
        """This thread's connection, opened if it has none (OSError when none can be opened)."""
        if not self._reusable():
            self._local.connection = http1.Connection(
                self._host, self._port, tls=self._tls, timeout=_TIMEOUT_SECONDS
            )
        return self._local.connection  # type: ignore[no-any-return]


@lru_cache(maxsize=2)
def _amz_date(epoch_seconds: int) -> str:
    """The request time as SigV4 writes it, formatted once a second rather than once a request."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y%m%dT%H%M%SZ")


def signature(
    secret_key: str, amz_date: str, region: str, service: str, canonical_request: str
) -> tuple[str, str]:
    """The credential scope and the SigV4 signature of `canonical_request` made at `amz_date` (also
    what the local stack checks signatures with)."""
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    key = _signing_key(secret_key, amz_date[:8], region, service)
    return scope, hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@lru_cache(maxsize=8)
def _signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
