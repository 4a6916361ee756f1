"""The minimal HTTP/1.1 client against a loopback server that answers with scripted raw bytes: each
framing a server may use (length, chunked, until close), interim answers, closed and broken
connections. The @connections client's behaviour on top of it is in test_management.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from streaming import http1

pytestmark = pytest.mark.connections
TIMEOUT = 10  # generous: the machine is shared; nothing here waits for it unless something is broken


class RawServer:
    """Accepts connections one after another; for each request read, sends the next scripted answer
    (raw bytes; None: close the connection instead of answering), and closes once the script is done."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            with connection:
                reader = connection.makefile("rb")
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        byte = reader.read(1)
                        if not byte:
                            break
                        head += byte
                    if not head:
                        break
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    self.requests.append(head + reader.read(length))
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    connection.sendall(answer)

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=TIMEOUT)


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[RawServer] = []

    def start(*answers: bytes | None) -> RawServer:
        servers.append(RawServer(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def connect(server: RawServer) -> http1.Connection:
    return http1.Connection("127.0.0.1", server.port, tls=None, timeout=TIMEOUT)


def test_a_request_goes_out_whole_and_the_connection_is_kept_alive(serve):
    server = serve(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n"
    )
    connection = connect(server)
    assert connection.request("POST", "/s/@connections/a%3D", {"host": "h", "x-amz-date": "d"}, b"{}") == (
        200,
        b"ok",
    )
    assert connection.request("DELETE", "/s/@connections/a%3D", {"host": "h"}, b"") == (410, b"")
    assert server.requests[0] == (
        b"POST /s/@connections/a%3D HTTP/1.1\r\nhost: h\r\nx-amz-date: d\r\ncontent-length: 2\r\n\r\n{}"
    )
    assert server.accepted == 1 and connection.open


def test_a_chunked_answer_is_read_whole(serve):
    server = serve(
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    )
    connection = connect(server)
    assert connection.request("POST", "/", {}, b"x") == (429, b"hello, world")
    assert connection.request("POST", "/", {}, b"y") == (200, b"")  # the next answer is found where it starts


def test_interim_answers_are_skipped(serve):
    server = serve(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")
    assert connect(server).request("POST", "/", {}, b"x") == (200, b"yes")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n\r\nok",  # no length: the body ends where the connection does
    ],
)
def test_an_answer_that_ends_the_connection_closes_it(serve, answer):
    server = serve(answer)  # then closes
    connection = connect(server)
    assert connection.request("POST", "/", {}, b"x") == (200, b"ok")
    assert not connection.open


def test_a_connection_the_server_closed_raises_closed(serve):
    server = serve(None)
    with pytest.raises(http1.Closed):
        connect(server).request("POST", "/", {}, b"x")


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (http1.MAX_HEADERS + 1) + b"\r\n",
    ],
)
def test_what_is_not_an_understood_answer_raises_bad_response(serve, answer):
    server = serve(answer)  # then closes
    with pytest.raises(http1.BadResponse):
        connect(server).request("POST", "/", {}, b"x")
