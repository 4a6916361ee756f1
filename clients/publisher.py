"""Python client for the IAM-authenticated publish API: signs each request with SigV4 (service
"lambda"), for a deployed Function URL or the local stack alike.

    client = PublishClient.from_endpoints(".local/endpoints.json")
    client.publish({"id": str(uuid.uuid4()), "type": "system.status", "data": {...}})

A producer that publishes single events often, from one thread or many, batches them adaptively:

    with BatchingPublisher(client) as publisher:
        result = publisher.publish(event)  # or publisher.submit(event), a Future
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urljoin

import boto3
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_FUNCTION_URL_REGION = re.compile(r"\.lambda-url\.([a-z0-9-]+)\.on\.aws")


class PublishError(RuntimeError):
    def __init__(self, status: int, body: Any, retry_after: int | None = None) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"{status} {error.get('code', '')}: {error.get('message', body)}")
        self.status = status
        self.code = error.get("code")
        self.body = body
        self.retry_after = retry_after  # seconds, when the answer said when to try again (429)


class PublishClient:
    def __init__(
        self,
        url: str,
        *,
        region: str | None = None,
        credentials: Credentials | None = None,
        timeout: float = 10.0,
        rate_limit_wait: float = 0.0,
    ) -> None:
        """`rate_limit_wait`: the most seconds one `publish` may wait, as `Retry-After` says, for a
        publisher beyond its rate (429 `rate_limited`) before it raises; 0 never waits."""
        self._url = url if url.endswith("/") else url + "/"
        match = _FUNCTION_URL_REGION.search(url)
        session = boto3.Session()
        self._region = region or (match.group(1) if match else session.region_name) or "us-east-1"
        resolved = credentials or session.get_credentials()
        if resolved is None:
            raise RuntimeError("no AWS credentials to sign publish requests with")
        self._credentials = resolved
        self._http = httpx.Client(timeout=timeout)
        self._rate_limit_wait = rate_limit_wait

    @property
    def region(self) -> str:
        return self._region

    @classmethod
    def from_endpoints(cls, path: str | Path, stack: str | None = None, **kwargs: Any) -> PublishClient:
        """From a `cdk deploy --outputs-file` file or the local stack's .local/endpoints.json."""
        outputs: dict[str, dict[str, str]] = json.loads(Path(path).read_text())
        name = stack or next(iter(outputs))
        return cls(outputs[name]["PublishUrl"], region=outputs[name].get("Region"), **kwargs)

    def publish(self, events: dict[str, Any] | list[dict[str, Any]]) -> Any:
        """One event (returns its result) or a list (returns {"events": [...]}). Refused for the rate,
        it is sent again, the same ids, after `Retry-After`, while the waits fit `rate_limit_wait`:
        nothing of a refused request was stored, and the ids keep a retry from storing anything twice."""
        body = json.dumps({"events": events} if isinstance(events, list) else events).encode()
        waited = 0.0
        while True:
            try:
                return self._call("POST", "events", body=body)
            except PublishError as error:
                if error.retry_after is None or waited + error.retry_after > self._rate_limit_wait:
                    raise
                time.sleep(error.retry_after)
                waited += error.retry_after

    def events_after(
        self,
        cursor: str | None = None,
        *,
        types: list[str] | None = None,
        role: str | None = None,
        limit: int = 100,
    ) -> Any:
        return self._call(
            "GET", "events", params={"cursor": cursor, "types": _csv(types), "role": role, "limit": limit}
        )

    def latest(self, count: int = 50, *, types: list[str] | None = None, role: str | None = None) -> Any:
        return self._call("GET", "events/latest", params={"count": count, "types": _csv(types), "role": role})

    def streams(self) -> Any:
        return self._call("GET", "streams")

    def request(
        self, method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """A signed request with nothing interpreted: for callers that want the raw response."""
        url = urljoin(self._url, path)
        signed = AWSRequest(method=method, url=url, data=body, headers=headers or {})
        if body and "Content-Type" not in signed.headers:
            signed.headers["Content-Type"] = "application/json"
        SigV4Auth(self._credentials.get_frozen_credentials(), "lambda", self._region).add_auth(signed)
        return self._http.request(method, url, content=body, headers=dict(signed.headers.items()))

    def _call(
        self, method: str, path: str, *, body: bytes = b"", params: dict[str, Any] | None = None
    ) -> Any:
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        response = self.request(method, f"{path}?{query}" if query else path, body=body)
        payload = response.json() if response.content else None
        if response.status_code >= 400:
            raise PublishError(response.status_code, payload, _retry_after(response))
        return payload

    def close(self) -> None:
        self._http.close()


class BatchingPublisher:
    """Publishes single events through one PublishClient in as few requests as the rate needs: an
    event goes at once when no request is in flight, and the events submitted while one is go
    together in the next (up to `max_events`). Nothing waits at low rates; at high rates a request
    carries many events, which the stream commits in one head update and delivers in one frame per
    subscriber. Events go in the order they were submitted. Thread-safe."""

    def __init__(self, client: PublishClient, *, max_events: int = 100) -> None:
        self._client = client
        self._max_events = max_events  # the publish API's `max_batch_events` at most
        self._pending: deque[tuple[dict[str, Any], Future[Any]]] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._sender = threading.Thread(target=self._send_until_closed, name="publisher", daemon=True)
        self._sender.start()

    def submit(self, event: dict[str, Any]) -> Future[Any]:
        """The event's result (as `PublishClient.publish` returns it) or its PublishError, to come."""
        future: Future[Any] = Future()
        with self._changed:
            if self._closed:
                raise RuntimeError("the publisher is closed")
            self._pending.append((event, future))
            self._changed.notify()
        return future

    def publish(self, event: dict[str, Any], timeout: float | None = None) -> Any:
        return self.submit(event).result(timeout)

    def close(self) -> None:
        """Send what was submitted, then stop."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._sender.join()

    def __enter__(self) -> BatchingPublisher:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _send_until_closed(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                batch = self._next_batch()
            if batch:
                self._send(batch)

    def _next_batch(self) -> list[tuple[dict[str, Any], Future[Any]]]:
        """The oldest pending events, up to an id seen twice (the API refuses one in a request)."""
        batch: list[tuple[dict[str, Any], Future[Any]]] = []
        ids: set[Any] = set()
        while self._pending and len(batch) < self._max_events and self._pending[0][0].get("id") not in ids:
            event, future = self._pending.popleft()
            if future.set_running_or_notify_cancel():  # else its caller cancelled it: not sent
                ids.add(event.get("id"))
                batch.append((event, future))
        return batch

    def _send(self, batch: list[tuple[dict[str, Any], Future[Any]]]) -> None:
        try:
            results = self._client.publish([event for event, _ in batch])["events"]
        except Exception as error:  # the callers' to handle, not the sender thread's
            if _refused_for_one_event(error) and len(batch) > 1:
                # Each alone, so each gets its own answer (one the request stored answers as a duplicate).
                for one in batch:
                    self._send([one])
                return
            results = [error] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _refused_for_one_event(error: Exception) -> bool:
    """A refusal that may be about one event of a request, not the request (a 4xx but the rate's)."""
    return isinstance(error, PublishError) and 400 <= error.status < 500 and error.status != 429


def _retry_after(response: httpx.Response) -> int | None:
    """`Retry-After` in seconds (the publish API sends whole seconds); None without one."""
    value = response.headers.get("retry-after", "")
    return int(value) if value.isdigit() else None


def _csv(values: list[str] | None) -> str | None:
    return ",".join(values) if values else None
