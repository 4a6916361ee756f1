"""Network faults on loopback: a TCP proxy whose connections can be cut abruptly, in either direction
at once, the way a lost network or a dead peer ends them (no close handshake, no `end` event)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator


class CuttingProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target`; `cut()` aborts one live connection."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.cuts = 0
        self._live: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._forwarding: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingProxy]:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            for pair in list(self._live):
                self._abort(pair)
            if self._forwarding:  # let them see the abort, rather than be cancelled when the loop ends
                await asyncio.wait(self._forwarding, timeout=5)

    @property
    def live(self) -> int:
        """How many connections it forwards now."""
        return len(self._live)

    def cut(self, rng: random.Random) -> bool:
        """Abort a random live connection; False if there is none."""
        if not self._live:
            return False
        self._abort(rng.choice(self._live))
        self.cuts += 1
        return True

    def _abort(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        for writer in pair:
            writer.transport.abort()
        with contextlib.suppress(ValueError):
            self._live.remove(pair)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        forwarding = asyncio.current_task()
        assert forwarding is not None
        self._forwarding.add(forwarding)
        forwarding.add_done_callback(self._forwarding.discard)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, upstream_writer)
        self._live.append(pair)
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer)
        )
        self._abort(pair)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof() if writer.can_write_eof() else writer.close()
