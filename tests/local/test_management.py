"""The @connections client against a real loopback HTTP server: paths, methods, bodies, statuses,
SigV4 signatures for execute-api, kept-alive connections that the server drops, unreachable endpoints."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from botocore.credentials import Credentials

from local.sigv4 import verify
from local.state import LocalCredentials
from streaming.management import ManagementApi

pytestmark = pytest.mark.connections
ACCESS_KEY = "AKIDLOCALTEST"
SECRET_KEY = "management-test-secret"
REGION = "eu-central-1"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]


@dataclass
class Behaviour:
    """What the server answers: scripted (status, body) pairs, then 200 with an empty body."""

    answers: list[tuple[int, bytes]] = field(default_factory=list)
    drop_connections: bool = False  # close every connection after one response, without saying so
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the handler closes
    server: Server

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        behaviour = self.server.behaviour
        with behaviour.lock:
            behaviour.seen.append(
                Seen(
                    self.command,
                    self.path,
                    {name.lower(): value for name, value in self.headers.items()},
                    body,
                    self.client_address,
                )
            )
            status, payload = behaviour.answers.pop(0) if behaviour.answers else (200, b"")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if behaviour.drop_connections:
            self.close_connection = True  # no "Connection: close": the client believes it is kept alive

    do_POST = do_GET = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.behaviour = Behaviour()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def api(server: Server, credentials: Credentials | None = None, stage: str = "/prod") -> ManagementApi:
    return ManagementApi(server.url + stage, REGION, credentials or Credentials(ACCESS_KEY, SECRET_KEY))


def signature_problem(server: Server, seen: Seen, secret: str = SECRET_KEY) -> str | None:
    return verify(
        LocalCredentials(ACCESS_KEY, secret),
        seen.method,
        server.url + seen.path,
        seen.headers,
        seen.body,
        service="execute-api",
    )


def test_post_sends_the_exact_body_to_the_connection_path(server):
    body = json.dumps({"type": "events", "note": "grüezi"}).encode() + b"\x00\xff"
    assert api(server).post("L0SM9cOFvHcCIhw=", body) == 200
    (seen,) = server.behaviour.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/prod/@connections/L0SM9cOFvHcCIhw%3D", body)


def test_connection_ids_are_quoted_as_one_path_segment(server):
    api(server, stage="/dev/").post("a+b/c d=", b"x")
    assert server.behaviour.seen[0].path == "/dev/@connections/a%2Bb%2Fc%20d%3D"


@pytest.mark.parametrize("status", [200, 403, 410, 429, 500])
def test_the_status_passes_through(server, status):
    server.behaviour.answers.append((status, b'{"message": "whatever"}'))
    assert api(server).post("abc=", b"{}") == status


def test_delete_uses_delete(server):
    server.behaviour.answers += [(204, b""), (410, b"")]
    management = api(server)
    assert management.delete("abc=") == 204
    assert management.delete("abc=") == 410
    assert [(s.method, s.path) for s in server.behaviour.seen] == [
        ("DELETE", "/prod/@connections/abc%3D")
    ] * 2


def test_every_request_is_sigv4_signed_for_execute_api_with_the_given_credentials(server):
    server.behaviour.answers += [(200, b""), (204, b"")]
    management = api(server)
    management.post("abc=", b'{"type":"pong"}')
    management.delete("abc=")
    assert len(server.behaviour.seen) == 2
    for seen in server.behaviour.seen:
        assert signature_problem(server, seen) is None, seen.method
        assert f"Credential={ACCESS_KEY}/" in seen.headers["authorization"]
        assert f"/{REGION}/execute-api/aws4_request" in seen.headers["authorization"]
        assert signature_problem(server, seen, secret="another-secret") == "signature does not match"


@pytest.mark.parametrize("connection_id", ["L0SM9cOFvHcCIhw=", "a+b/c d=", "a~b_c-d.e", "ümlaut%41"])
@pytest.mark.parametrize("stage", ["/prod", "/local", ""])
def test_signatures_verify_for_any_connection_id_and_stage(server, connection_id, stage):
    assert api(server, stage=stage).post(connection_id, b"{}") == 200
    (seen,) = server.behaviour.seen
    assert seen.path.startswith(f"{stage}/@connections/")
    assert signature_problem(server, seen) is None


def test_temporary_credentials_send_and_sign_their_session_token(server):
    api(server, Credentials(ACCESS_KEY, SECRET_KEY, "session-token-1")).post("abc=", b"{}")
    (seen,) = server.behaviour.seen
    assert seen.headers["x-amz-security-token"] == "session-token-1"
    assert "x-amz-security-token" in seen.headers["authorization"]
    assert signature_problem(server, seen) is None


def test_the_signature_covers_the_body(server):
    api(server).post("abc=", b'{"a":1}')
    (seen,) = server.behaviour.seen
    seen.body = b'{"a":2}'
    assert signature_problem(server, seen) == "signature does not match"


def test_requests_reuse_one_kept_alive_connection(server):
    management = api(server)
    assert [management.post("abc=", b"%d" % i) for i in range(3)] == [200] * 3
    assert len({s.client for s in server.behaviour.seen}) == 1


def test_a_kept_alive_connection_the_server_dropped_is_reopened(server):
    server.behaviour.drop_connections = True
    management = api(server)
    assert management.post("abc=", b"first") == 200
    assert management.post("abc=", b"second") == 200
    assert management.delete("abc=") == 200
    seen = server.behaviour.seen
    assert [(s.method, s.body) for s in seen] == [("POST", b"first"), ("POST", b"second"), ("DELETE", b"")]
    assert len({s.client for s in seen}) == 3
    assert all(signature_problem(server, s) is None for s in seen)


def test_threads_post_in_parallel_on_connections_of_their_own(server):
    management = api(server)
    bodies = [b"message %d" % i for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda body: management.post("abc=", body), bodies))
    assert statuses == [200] * len(bodies)
    assert sorted(s.body for s in server.behaviour.seen) == sorted(bodies)


def test_an_unreachable_endpoint_gives_status_0():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    management = ManagementApi(f"http://127.0.0.1:{port}/prod", REGION, Credentials(ACCESS_KEY, SECRET_KEY))
    assert management.post("abc=", b"{}") == 0
    assert management.delete("abc=") == 0


@pytest.mark.parametrize("url", ["", "ftp://example.com/prod", "https:///prod", "127.0.0.1:9/prod"])
def test_only_http_urls_with_a_host_are_accepted(url):
    with pytest.raises(ValueError, match="not a management endpoint URL"):
        ManagementApi(url, REGION, Credentials(ACCESS_KEY, SECRET_KEY))
