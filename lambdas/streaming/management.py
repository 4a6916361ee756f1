"""The stage's `@connections` management API: post to and close connections.

Every delivery is one signed HTTP request, so its client CPU sets both latency and how many fan-out
workers a deployment needs. boto3's `post_to_connection` costs about 1.3 ms of CPU per call, botocore's
SigV4 signer alone about 0.2 ms. This client signs with SigV4 directly (the signing key is derived once
a day, the canonical request has three headers) and sends over keep-alive `http.client` connections,
one per thread, reused across invocations (docs/performance.md). Its signatures are checked against
botocore's in the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, urlsplit

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
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
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
            connection, reused = self._connection()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop(connection)
                # A kept-alive connection the server had closed while idle: the request was not
                # processed, so it is sent once more on a new connection.
                if not reused or attempt:
                    return 0, b""
            except (http.client.HTTPException, OSError):
                # Refused, unreachable or timed out: whether it arrived is unknown, so it is not
                # sent again (a second copy would be a duplicate frame).
                self._drop(connection)
                return 0, b""
        return 0, b""

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None

    def _sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """SigV4 headers for one request (AWS Signature Version 4, as for every service but S3)."""
        credentials = self._credentials.get_frozen_credentials()
        amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
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
        scope = f"{amz_date[:8]}/{self._region}/{SERVICE}/aws4_request"
        to_sign = f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = _signing_key(credentials.secret_key, amz_date[:8], self._region)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        )
        return headers

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it has carried a request before."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        factory = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        connection = factory(self._host, self._port, timeout=_TIMEOUT_SECONDS)
        self._local.connection = connection
        return connection, False


@lru_cache(maxsize=8)
def _signing_key(secret_key: str, day: str, region: str) -> bytes:
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, SERVICE, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
