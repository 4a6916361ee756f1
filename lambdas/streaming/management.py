"""The stage's `@connections` management API: post to, look up and close connections.

Every delivery is one signed HTTP request, so its client CPU sets both latency and how many fan-out
workers a deployment needs. boto3's `post_to_connection` costs about 0.7 ms of CPU per call; this
client signs with botocore's own SigV4 signer and sends over keep-alive `http.client` connections
(one per thread, reused across invocations), about 0.3 ms (docs/performance.md).
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

SERVICE = "execute-api"
_TIMEOUT_SECONDS = 5


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
        """Close the connection (the client sees close code 1000... or 1001 locally); 410 if gone."""
        return self._request("DELETE", connection_id, b"")[0]

    def get(self, connection_id: str) -> dict[str, Any] | None:
        status, body = self._request("GET", connection_id, b"")
        return json.loads(body) if status == 200 else None

    def _request(self, method: str, connection_id: str, body: bytes) -> tuple[int, bytes]:
        path = f"{self._prefix}/@connections/{quote(connection_id, safe='')}"
        headers = self._sign(method, path, body)
        for attempt in range(2):  # a kept-alive connection the server has closed is reopened once
            connection = self._connection()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt:
                    return 0, b""
        return 0, b""

    def _sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        request = AWSRequest(method=method, url=f"{self._scheme}://{self._netloc}{path}", data=body)
        SigV4Auth(self._credentials.get_frozen_credentials(), SERVICE, self._region).add_auth(request)
        return dict(request.headers.items())

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            factory = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            connection = factory(self._host, self._port, timeout=_TIMEOUT_SECONDS)
            self._local.connection = connection
        return connection
