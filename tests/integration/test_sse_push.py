"""SSE streams relaying from the WebSocket API (sse.push, streaming.relay) on the local stack: events
pushed, not polled; resume from a cursor; no duplicate at the seam between the store read and the
pushes; and the fallback to polling when the push connection is refused or drops, with nothing lost.

The push stack polls once a minute, so an event that arrives within a test's wait was pushed."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from local.state import LocalState
from local.token import issue
from tests.faults.delivery import publish, set_fault
from tests.integration.conftest import connection_ids, outputs, running_local_stack, until

pytestmark = pytest.mark.integration

WAIT = 60  # seconds, for anything to arrive on a loaded machine
FELL_BACK = "sse push unavailable"


def run(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """The test, run to its end in an event loop of its own."""

    @functools.wraps(test)
    def synchronous(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 300))

    return synchronous


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Iterator[LocalState]:
    options = ("--sse-heartbeat-seconds", "1", "--sse-poll-interval-ms", "60000")
    with running_local_stack(tmp_path_factory.mktemp("push"), *options) as state:
        yield state


@dataclass
class Stream:
    events: list[dict[str, Any]] = field(default_factory=list)
    last_id: str | None = None  # the cursor after the last event
    heartbeats: int = 0

    def seqs(self) -> list[int]:
        return [event["seq"] for event in self.events]


@contextlib.asynccontextmanager
async def streaming(stack: LocalState, subject: str, resume: str | None = None) -> AsyncIterator[Stream]:
    """A viewer's stream of signal.created read in the background, entered at its first heartbeat (its
    live source is ready then: the relay subscribed, or fallen back)."""
    stream = Stream()
    headers = {"Authorization": f"Bearer {issue(stack, 'viewer', subject)}"}
    if resume:
        headers["Last-Event-ID"] = resume
    url = outputs(stack)["SseUrl"] + "events"

    async def read(client: httpx.AsyncClient) -> None:
        params = {"types": "signal.created"}
        async with aconnect_sse(client, "GET", url, headers=headers, params=params) as source:
            assert source.response.status_code == 200
            async for sse in source.aiter_sse():
                if sse.event == "heartbeat":
                    stream.heartbeats += 1
                elif sse.event == "signal.created":
                    stream.events.append(json.loads(sse.data))
                    stream.last_id = sse.id

    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client:
        reading = asyncio.create_task(read(client))
        try:
            await until(lambda: stream.heartbeats or reading.done(), WAIT)
            assert not reading.done(), reading.exception()
            yield stream
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)


def log(stack: LocalState) -> str:
    return (Path(stack.directory) / "stack.log").read_text()


@run
async def test_a_stream_gets_its_events_pushed_and_resumes_from_its_cursor_after_a_cut(pushed):
    before = set(connection_ids(pushed))
    async with streaming(pushed, "push-alice") as stream:
        await until(lambda: set(connection_ids(pushed)) - before, WAIT)
        [relay] = set(connection_ids(pushed)) - before  # the stream's own WebSocket connection
        first = await publish(pushed, 3)
        await until(lambda: len(stream.events) == 3, WAIT)  # polling would take a minute
        resume = stream.last_id
    await until(lambda: relay not in connection_ids(pushed), WAIT)  # closed with its stream
    missed = await publish(pushed, 3)  # while no stream is open
    async with streaming(pushed, "push-alice", resume) as again:
        later = await publish(pushed, 2)
        await until(lambda: len(again.events) == 5, WAIT)
    assert [e["id"] for e in stream.events] == first
    assert [e["id"] for e in again.events] == missed + later
    seqs = stream.seqs() + again.seqs()
    assert seqs == list(range(seqs[0], seqs[0] + 8))
    assert FELL_BACK not in log(pushed)


@run
async def test_a_stream_resuming_while_events_arrive_gets_each_once_in_order(pushed):
    """The seam: events before the relay's subscription come from the store, later ones pushed, and
    those published while the stream opens could come either way."""
    async with streaming(pushed, "seam-start") as start:
        await publish(pushed, 1)
        await until(lambda: start.events, WAIT)
    backlog = await publish(pushed, 5)
    publishing = asyncio.create_task(publish(pushed, 20))  # during the open
    async with streaming(pushed, "seam-bob", start.last_id) as stream:
        during = await publishing
        after = await publish(pushed, 5)
        await until(lambda: len(stream.events) >= 30, WAIT)
        await asyncio.sleep(1)  # a heartbeat more: a repeat, had one been sent, would be here now
    assert [e["id"] for e in stream.events] == backlog + during + after
    assert stream.seqs() == sorted(set(stream.seqs()))
    assert FELL_BACK not in log(pushed)


@run
async def test_a_dropped_push_connection_falls_back_to_polling_and_loses_nothing(tmp_path):
    options = ("--sse-heartbeat-seconds", "1", "--sse-poll-interval-ms", "200")
    with running_local_stack(tmp_path, *options) as stack:
        async with streaming(stack, "drop-carol") as stream:
            await until(lambda: connection_ids(stack), WAIT)  # the relay's connection
            [relay] = connection_ids(stack)
            # API Gateway answers 410 for a connection it no longer holds, and the gateway closes it:
            # the event posted then never reaches the relay.
            set_fault(stack, status=410, connection_id=relay, type="events")
            lost = await publish(stack, 1)
            await until(lambda: FELL_BACK in log(stack), WAIT)
            later = await publish(stack, 3)
            await until(lambda: len(stream.events) >= 4, WAIT)
            await asyncio.sleep(1)
        assert [e["id"] for e in stream.events] == lost + later
        assert '"reason":"closed"' in log(stack)


@run
async def test_a_refused_push_connection_falls_back_to_polling(tmp_path):
    with socket.socket() as unused:  # bound, never listening: connecting is refused
        unused.bind(("127.0.0.1", 0))
        push_url = f"ws://127.0.0.1:{unused.getsockname()[1]}/"
        options = (
            "--sse-heartbeat-seconds",
            "1",
            "--sse-poll-interval-ms",
            "200",
            "--sse-push-url",
            push_url,
        )
        with running_local_stack(tmp_path, *options) as stack:
            async with streaming(stack, "refused-dave") as stream:
                ids = await publish(stack, 3)
                await until(lambda: len(stream.events) == 3, WAIT)
            assert [e["id"] for e in stream.events] == ids
            assert FELL_BACK in log(stack) and '"reason":"unreachable"' in log(stack)
            assert connection_ids(stack) == []
