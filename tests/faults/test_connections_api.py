"""The `@connections` API failing under the real fan-out (the local stack, its gateway told to fail by
local.faults): throttled (429), failing (500), timing out, and answering 410. Each time the application
behind a `Subscriber` gets every stored event once and in order, retries stay within their bound (the
gateway counts the posts it answered), a gone connection's records are purged, and the metric counts
it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import boto3
import pytest

from local.state import LocalState
from streaming.connections import ConnectionRegistry
from streaming.management import RETRY_DELAYS_SECONDS
from tests.faults.delivery import (
    TYPES,
    WAIT,
    Metrics,
    answered,
    application,
    clear_faults,
    counter,
    publish,
    set_fault,
    stored,
)
from tests.integration.conftest import connection_ids, outputs, running_local_stack, until

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("local-stack")]
RETRIES = len(RETRY_DELAYS_SECONDS)  # after the first post of a frame
HUNG_SECONDS = 5  # longer than the management client waits (3 s): a timeout


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("faults-connections")) as state:
        yield state


@pytest.fixture(autouse=True)
def no_faults_left(stack):
    yield
    clear_faults(stack)


def test_throttling_that_passes_is_retried_and_the_frame_arrives_live(stack):
    async def scenario() -> None:
        async with application(stack) as app:
            metrics = Metrics(stack)
            set_fault(stack, status=429, count=2, connection_id=app.connection_id, type="events")
            ids = await publish(stack, 3)
            await app.receives(ids)
            growth = await metrics.grown(frames_delivered=3, delivery_retries=2)
            assert app.ids == ids
            assert answered(stack) == [2]  # two throttled posts, then the third went through
            assert counter(growth, "delivery_retries") == 2
            assert counter(growth, "frames_failed") == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("status", [429, 500])
def test_a_frame_refused_past_its_retries_is_given_up_and_the_subscriber_repairs_the_gap(stack, status):
    async def scenario() -> None:
        async with application(stack) as app:
            # One event first: a stream the subscriber has no position in yet is not in its heads check
            # (a lost first event waits for the next one's `prev`; see docs/reliability.md, Faults).
            first = await publish(stack, 1)
            await app.receives(first)
            metrics = Metrics(stack)
            set_fault(stack, status=status, count=100, connection_id=app.connection_id, type="events")
            lost = first + await publish(stack, 1)
            growth = await metrics.grown(frames_failed=1)
            assert answered(stack) == [1 + RETRIES]  # bounded: the first post and its retries
            assert counter(growth, "delivery_retries") == RETRIES
            clear_faults(stack)
            app.ping_every(1)  # the lost event is the last: the heads in `pong` show it
            await app.receives(lost)
            ids = lost + await publish(stack, 2)
            await app.receives(ids)
            growth = await metrics.grown(replays=1)
            assert app.ids == ids
            assert app.subscriber.gap_replays >= 1
            assert stored(stack, ids) == ids
            assert counter(growth, "frames_failed") == 1

    asyncio.run(scenario())


def test_a_post_that_times_out_is_not_sent_again_and_the_subscriber_repairs_the_gap(stack):
    async def scenario() -> None:
        async with application(stack) as app:
            metrics = Metrics(stack)
            rule = {"hang_seconds": HUNG_SECONDS, "count": 100, "type": "events"}
            set_fault(stack, connection_id=app.connection_id, **rule)
            lost = await publish(stack, 1)
            growth = await metrics.grown(frames_failed=1)
            # Its fate unknown (it may have arrived): a second copy could be a duplicate, so none.
            assert answered(stack) == [1]
            assert counter(growth, "delivery_retries") == 0
            clear_faults(stack)
            ids = lost + await publish(stack, 2)  # the next event's `prev` shows the gap
            await app.receives(ids)
            assert app.ids == ids
            assert app.subscriber.gap_replays >= 1
            assert stored(stack, ids) == ids

    asyncio.run(scenario())


def test_a_stale_connection_is_purged_at_its_first_410_and_no_live_one_is(stack, settings):
    values = outputs(stack)
    dynamodb = boto3.client("dynamodb", endpoint_url=values["AwsEndpointUrl"], region_name=values["Region"])
    registry = ConnectionRegistry(dynamodb, values["ConnectionsTableName"], settings.roles)
    ghost_id = "ghostfaults00="
    ghost = registry.connect(ghost_id, "ghost", "viewer", int(time.time()) + 600)
    registry.subscribe(ghost, sorted(TYPES))  # its $disconnect never came

    async def scenario() -> None:
        async with application(stack) as app:
            metrics = Metrics(stack)
            # The gateway answers 410 for the ghost anyway; the rule counts the posts it gets.
            set_fault(stack, status=410, count=100, connection_id=ghost_id)
            ids = await publish(stack, 3)
            await app.receives(ids)
            growth = await metrics.grown(connections_gone=1)
            assert app.ids == ids
            assert answered(stack) == [1]  # a 410 is not retried, and the ghost gets no second frame
            assert counter(growth, "connections_gone") == 1
            assert registry.get(ghost_id) is None
            assert ghost_id not in {s.connection_id for s in registry.subscribers("signal.created")}
            assert app.connection_id in await asyncio.to_thread(connection_ids, stack)

    asyncio.run(scenario())


def test_a_410_for_a_live_connection_closes_it_and_the_subscriber_resumes_without_a_loss(stack):
    async def scenario() -> None:
        async with application(stack) as app:
            metrics = Metrics(stack)
            set_fault(stack, status=410, count=1, connection_id=app.connection_id, type="events")
            ids = await publish(stack, 1)
            await until(lambda: app.subscriber.connections >= 2, WAIT)  # closed by the gateway: back
            ids += await publish(stack, 2)
            await app.receives(ids)
            growth = await metrics.grown(connections_gone=1)
            assert app.ids == ids
            assert answered(stack) == [1]
            assert app.connection_id not in await asyncio.to_thread(connection_ids, stack)
            assert counter(growth, "connections_gone") == 1

    asyncio.run(scenario())
