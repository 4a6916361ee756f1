"""A publisher that dies between its commit and its fan-out: the event is stored but no subscriber is
sent it. The local stack's store gets exactly that from the real `Publisher` built with no live
delivery (what a publish function leaves when it dies right after `EventStore.append`); subscribers
find the hole, by the heads in `pong` when it was the last event or by the next event's `prev`, and
replay it. Nothing is lost, nothing arrives twice, and the route handler's `Replays` counts the repair."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import boto3
import pytest

from local.state import LocalState
from stacks.config import load
from streaming.publish import Publisher
from streaming.store import EventStore
from tests.conftest import signal
from tests.faults.delivery import Metrics, application, counter, publish, stored
from tests.integration.conftest import outputs, running_local_stack

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("local-stack")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("faults-publisher")) as state:
        yield state


def committed_only(stack: LocalState) -> str:
    """One event stored as the stack's publish function stores it, then nothing: its id."""
    values = outputs(stack)
    settings = load("dev").runtime_settings(values["EventsTableName"])
    dynamodb = boto3.client("dynamodb", endpoint_url=values["AwsEndpointUrl"], region_name=values["Region"])
    store = EventStore(
        dynamodb, settings.events_table, settings.streams_by_type, settings.replay_window_seconds
    )
    event = signal()
    Publisher(settings, store, live=()).publish(event, "publisher-that-died")
    return str(event["id"])


@pytest.mark.parametrize("found_by", ["heads", "prev"])
def test_an_event_committed_but_never_fanned_out_is_repaired_by_replay(stack, found_by):
    async def scenario() -> None:
        async with application(stack) as app:
            metrics = Metrics(stack)
            ids = await publish(stack, 2)
            await app.receives(ids)
            ids.append(await asyncio.to_thread(committed_only, stack))
            if found_by == "heads":  # it is the last event: only the stream's head shows it
                app.ping_every(1)
                await app.receives(ids)
            ids += await publish(stack, 2)  # with "prev": the first of these points past the hole
            await app.receives(ids)
            growth = await metrics.grown(replays=1)
            assert app.ids == ids
            assert stored(stack, ids) == ids
            assert app.subscriber.gap_replays >= 1
            assert counter(growth, "events_replayed") >= 1
            print(
                f"{found_by}: {len(ids)} events, {app.subscriber.gap_replays} gap repairs, "
                f"{counter(growth, 'events_replayed'):.0f} events replayed"
            )

    asyncio.run(scenario())
