"""The SSE function reaching its timeout mid-stream: the local runtime ends the invocation as Lambda
does (`--sse-timeout-seconds` below `--sse-max-stream-seconds`, so the planned end never comes): the
response is cut without an `end` event and the function is heard no more. The subscriber reconnects
from its last event id and the application gets every event once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from local.state import LocalState
from tests.faults.delivery import WAIT, Metrics, application, publish, stored
from tests.integration.conftest import running_local_stack, until

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("local-stack")]
TIMEOUT_SECONDS = 6
CUTS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    options = ("--sse-timeout-seconds", str(TIMEOUT_SECONDS), "--sse-max-stream-seconds", "60")
    with running_local_stack(tmp_path_factory.mktemp("faults-sse"), *options) as state:
        yield state


def test_a_stream_cut_by_the_functions_timeout_resumes_from_its_last_event_id_without_a_loss(stack):
    async def scenario() -> None:
        async with application(stack, transport="sse") as app:
            metrics = Metrics(stack)
            ids: list[str] = []
            for cut in range(1, CUTS + 1):
                ids += await publish(stack, 3)
                await app.receives(ids)
                await until(lambda cut=cut: app.subscriber.connections > cut, WAIT)  # cut, and back
            ids += await publish(stack, 3)
            await app.receives(ids)
            growth = metrics.growth()
            opened = growth.get('streaming_connections_opened_total{role="viewer",transport="sse"}', 0)
            assert opened >= CUTS  # the streams after the first
            assert app.ids == ids
            assert stored(stack, ids) == ids
            assert app.subscriber.planned_reconnects == 0  # no `end` came: each stream was cut
            # The cut streams said nothing of their end: a function past its timeout is not heard.
            # Deployed, Lambda counts the timeout in the function's Errors (alarm <env>-SseErrors).
            ended = [v for series, v in growth.items() if series.startswith("streaming_sse_streams_ended")]
            assert sum(ended) == 0
            print(
                f"sse timeout: {len(ids)} events, {app.subscriber.connections} streams, "
                f"{app.subscriber.ordering.repeats} repeats suppressed"
            )

    asyncio.run(scenario())
    log = (stack.directory / "stack.log").read_text()
    assert log.count(f"sse: Task timed out after {TIMEOUT_SECONDS}.00 seconds") >= CUTS
