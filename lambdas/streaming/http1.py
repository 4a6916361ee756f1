"""One kept-alive HTTP/1.1 client connection, for the `@connections` API's many small requests.

Each request is written with one `sendall` and its response read with a minimal parser. `http.client`
costs about 0.1 ms of CPU per request more than this (on this project's development machine): it
writes the headers and the body in separate system calls and parses every response's headers with
the `email` package (docs/performance.md, "Client CPU per delivery"). What this parser needs is small:
the status, `Content-Length` or chunked transfer encoding, and `Connection: close`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping

MAX_LINE = 65_536  # a status or header line longer than this is not a response from API Gateway
MAX_HEADERS = 100
MAX_BODY = 1 << 20  # the API's answers are small JSON documents


class Closed(ConnectionError):
    """The server closed the connection before answering: the request was not processed."""


class BadResponse(OSError):
    """Not an HTTP/1.1 response this client understands: whether the request was processed is unknown."""


class Connection:
    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None, timeout: float) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each request is one write
            self._sock = tls.wrap_socket(sock, server_hostname=host) if tls else sock
        except BaseException:
            sock.close()
            raise
        self._reader = self._sock.makefile("rb")
        self.open = True

    def request(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """Send one request and read its response: (status, body). Raises Closed when the server had
        closed the connection (a kept-alive one it dropped while idle), OSError otherwise."""
        lines = [f"{method} {target} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
        lines.append(f"content-length: {len(body)}\r\n\r\n")
        try:
            self._sock.sendall("\r\n".join(lines).encode() + body)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise Closed(str(error)) from error
        status, length, chunked, keep_alive = self._head(method)
        if chunked:
            answer = self._chunked()
        elif length is not None:
            answer = self._exactly(length)
        else:  # an HTTP/1.0-style answer ends where the connection does
            answer, keep_alive = self._reader.read(MAX_BODY), False
        if not keep_alive:
            self.close()
        return status, answer

    def close(self) -> None:
        self.open = False
        self._reader.close()
        self._sock.close()

    def _head(self, method: str) -> tuple[int, int | None, bool, bool]:
        """The status, the body's length (None: until the connection closes), whether it is chunked,
        and whether the connection stays open after it."""
        while True:
            try:
                status_line = self._line()
            except ConnectionResetError as error:
                raise Closed(str(error)) from error
            if not status_line:
                raise Closed("the server closed the connection before answering")
            version, _, rest = status_line.partition(b" ")
            if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
                raise BadResponse(f"not an HTTP/1.x status line: {status_line[:80]!r}")
            status = int(rest[:3])
            fields = self._fields()
            if status >= 200 or status == 101:
                break  # 1xx interim answers (100 Continue) come before the real one
        keep_alive = version == b"HTTP/1.1" and b"close" not in fields.get(b"connection", b"").lower()
        if method == "HEAD" or status in (204, 304):
            return status, 0, False, keep_alive
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            return status, None, True, keep_alive
        length = fields.get(b"content-length")
        if length is None:
            return status, None, False, False
        if not length.strip().isdigit():
            raise BadResponse(f"bad Content-Length: {length[:40]!r}")
        return status, int(length), False, keep_alive

    def _fields(self) -> dict[bytes, bytes]:
        fields: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADERS):
            line = self._line()
            if line in (b"", b"\r\n", b"\n"):
                return fields
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        raise BadResponse("too many header lines")

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadResponse("header line too long")
        return line

    def _exactly(self, length: int) -> bytes:
        if length > MAX_BODY:
            raise BadResponse(f"a {length}-byte answer")
        data = self._reader.read(length)
        if len(data) < length:
            raise BadResponse("the connection closed inside the body")
        return data

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self._line().split(b";", 1)[0].strip()
            try:
                chunk = int(line, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size: {line[:40]!r}") from None
            if chunk == 0:
                self._fields()  # trailers, up to the blank line
                return b"".join(parts)
            size += chunk
            if size > MAX_BODY:
                raise BadResponse(f"an answer of more than {MAX_BODY} bytes")
            parts.append(self._exactly(chunk))
            if self._exactly(2) != b"\r\n":
                raise BadResponse("no CRLF after a chunk")
