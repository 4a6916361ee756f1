"""A fan-out worker dying mid-chunk. The real `Publisher` and `FanOut` (here, as a publish function)
store an event in the local stack, deliver the first chunk of its audience themselves and hand the rest
to the worker; the worker is the real handler in a process of its own, with a worker's environment
pointing at the stack's moto and gateway, SIGKILLed once it has delivered to one connection of its
chunk and the gateway holds its posts to the others (local.faults). Deployed the worker is not retried
(`retry_attempts=0`), so nothing sends the chunk again: the connections that got the frame have the
event once, the others find the hole (heads in `pong`, or the next event's `prev`) and replay it, and
the store holds every event. Lambda counts the death in the worker's `Errors` (alarm
`<env>-FanoutWorkerErrors`); a killed worker prints no metrics, and locally the route handler's
`Replays` counts the repairs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.credentials import Credentials

from local.__main__ import CONNECTIONS_TABLE, FANOUT_WORKER, HANDLER_CREDENTIALS
from local.gateway import STAGE
from local.state import LocalState
from stacks.config import ROOT, load
from streaming import constants as c
from streaming.connections import ConnectionRegistry
from streaming.fanout import FanOut
from streaming.management import ManagementApi
from streaming.publish import Publisher
from streaming.settings import DeliverySettings
from streaming.store import EventStore
from tests.conftest import signal as new_signal
from tests.faults.delivery import (
    WAIT,
    Application,
    Metrics,
    answered,
    application,
    clear_faults,
    counter,
    publish,
    set_fault,
    stored,
)
from tests.integration.conftest import outputs, running_local_stack, until

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("local-stack")]
CHUNK = 10  # connections per chunk (the least the settings allow): the publisher serves the first
IN_WORKER = 3  # the connections past the first chunk: one worker's chunk
DELIVERED_BEFORE_DEATH = 1  # connections of the worker's chunk that get the frame before the kill
HELD_SECONDS = 60  # the gateway holds the worker's other posts until long after it is dead
# The deployed handler, given one chunk on stdin, in a process of its own (as a Lambda environment is).
WORKER = f"""
import json, sys
from handlers import fanout_worker
from local.lambda_runtime import LocalContext
fanout_worker.handler(json.load(sys.stdin), LocalContext({FANOUT_WORKER!r}))
"""
SNAPSHOT = ROOT / "tests/infra/__snapshots__/test_stacks/test_template_snapshot[dev].json"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    options = ("--fanout-chunk-connections", str(CHUNK))  # the stack's own publishes chunk alike
    with running_local_stack(tmp_path_factory.mktemp("faults-worker"), *options) as state:
        yield state


@pytest.fixture(autouse=True)
def no_faults_left(stack):
    yield
    clear_faults(stack)


def delivery_settings(stack: LocalState) -> DeliverySettings:
    """A worker's delivery settings, for the local stack's gateway."""
    gateway = urlsplit(outputs(stack)["WebSocketUrl"]).netloc
    return load("dev").delivery_settings(CONNECTIONS_TABLE, f"http://{gateway}/{STAGE}", fanout_function="")


def worker_environment(stack: LocalState) -> dict[str, str]:
    """What the deployed worker reads from its environment, for the local stack's moto and gateway."""
    values = outputs(stack)
    return {
        **os.environ,
        **load("dev").runtime_settings(values[c.OUTPUT_EVENTS_TABLE]).to_env(),
        **delivery_settings(stack).to_env(),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")]),
        "AWS_ENDPOINT_URL": values["AwsEndpointUrl"],
        "AWS_ACCESS_KEY_ID": HANDLER_CREDENTIALS.access_key_id,
        "AWS_SECRET_ACCESS_KEY": HANDLER_CREDENTIALS.secret_access_key,
        "AWS_DEFAULT_REGION": values["Region"],
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


def publish_handing_chunks_on(stack: LocalState) -> tuple[str, list[dict[str, Any]]]:
    """One event published as a publish function publishes it, serving the first chunk of its audience
    and handing each further chunk on: its id and the chunks (the workers' payloads)."""
    values = outputs(stack)
    settings = load("dev").runtime_settings(values[c.OUTPUT_EVENTS_TABLE])
    delivery = delivery_settings(stack)
    dynamodb = boto3.client("dynamodb", endpoint_url=values["AwsEndpointUrl"], region_name=values["Region"])
    registry = ConnectionRegistry(
        dynamodb, CONNECTIONS_TABLE, settings.roles, max_connection_seconds=delivery.max_connection_seconds
    )
    credentials = Credentials(HANDLER_CREDENTIALS.access_key_id, HANDLER_CREDENTIALS.secret_access_key)
    chunks: list[dict[str, Any]] = []
    with ThreadPoolExecutor(CHUNK) as executor:  # the first chunk's posts, in parallel
        fanout = FanOut(
            registry,
            ManagementApi(delivery.management_url, values["Region"], credentials),
            compress_above=delivery.compress_above_bytes,
            chunk_connections=CHUNK,
            dispatch=chunks.append,
            executor=executor,
        )
        store = EventStore(
            dynamodb, settings.events_table, settings.streams_by_type, settings.replay_window_seconds
        )
        event = new_signal()
        Publisher(settings, store, live=(fanout.deliver_stored,)).publish(event, "publisher")
    return str(event["id"]), chunks


@contextlib.contextmanager
def worker_process(payload: dict[str, Any], environment: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, env=environment, text=True
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(payload))
    process.stdin.close()
    try:
        yield process
    finally:
        process.kill()  # SIGKILL: what is left of a function Lambda ends, whatever it was doing
        process.wait(WAIT)


async def subscribers(stack: LocalState, exits: contextlib.AsyncExitStack) -> dict[str, Application]:
    """One per connection of the audience, by connection id."""
    apps = [await exits.enter_async_context(application(stack)) for _ in range(CHUNK + IN_WORKER)]
    return {app.connection_id: app for app in apps}


@pytest.mark.parametrize("found_by", ["heads", "prev"])
def test_a_worker_killed_mid_chunk_loses_nothing_and_its_unserved_connections_replay(stack, found_by):
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as exits:
            apps = await subscribers(stack, exits)
            ids = await publish(stack, 2)  # every subscriber knows the stream before the fault
            await asyncio.gather(*(app.receives(ids) for app in apps.values()))
            metrics = Metrics(stack)

            event_id, chunks = await asyncio.to_thread(publish_handing_chunks_on, stack)
            ids.append(event_id)
            [chunk] = chunks
            in_chunk = [recipient["connection_id"] for recipient in chunk["recipients"]]
            assert len(in_chunk) == IN_WORKER and set(in_chunk) <= set(apps)
            served, held = in_chunk[:DELIVERED_BEFORE_DEATH], in_chunk[DELIVERED_BEFORE_DEATH:]
            for connection_id in held:
                set_fault(stack, hang_seconds=HELD_SECONDS, connection_id=connection_id, type="events")

            with worker_process(chunk, worker_environment(stack)) as worker:
                for connection_id in served:
                    await apps[connection_id].receives(ids)
                await until(lambda: answered(stack) == [1] * len(held), WAIT)  # its other posts: held
                assert worker.poll() is None  # mid-chunk
                worker.kill()
                await asyncio.to_thread(worker.wait, WAIT)
            assert worker.returncode == -signal.SIGKILL
            assert all(len(apps[connection_id].events) == len(ids) - 1 for connection_id in held)

            if found_by == "heads":  # it is the last event: only the stream's head shows it
                for app in apps.values():
                    app.ping_every(1)
            else:  # the next events point past the hole
                ids += await publish(stack, 2)
            await asyncio.gather(*(app.receives(ids) for app in apps.values()))

            assert {connection_id: app.ids for connection_id, app in apps.items()} == dict.fromkeys(apps, ids)
            assert stored(stack, ids) == ids
            # The frames that did arrive arrived once: nobody sent the chunk again.
            assert all(
                apps[connection_id].subscriber.ordering.repeats == 0
                for connection_id in set(apps) - set(held)
            )
            assert answered(stack) == [1] * len(held)  # each held post was made once
            repaired = {connection_id for connection_id, app in apps.items() if app.subscriber.gap_replays}
            assert repaired == set(held)
            growth = await metrics.grown(replays=len(held))
            print(
                f"{found_by}: worker killed after {len(served)} of {IN_WORKER} posts; {len(held)} "
                f"connections repaired by replay, {counter(growth, 'replays'):.0f} replays counted"
            )

    asyncio.run(scenario())


def test_deployed_a_dead_worker_is_not_retried_and_its_errors_alarm():
    """The bound and the count of this fault where it matters, in the template the snapshot tests hold
    equal to the synthesized one: no retry and no on-failure destination (a retried chunk would post
    frames some connections already have), and an alarm on any `Errors` of the worker."""
    resources = json.loads(SNAPSHOT.read_text())["Resources"]

    def properties(resource_type: str) -> list[dict[str, Any]]:
        return [
            resource["Properties"] for resource in resources.values() if resource["Type"] == resource_type
        ]

    [worker] = [
        logical_id
        for logical_id, resource in resources.items()
        if resource["Type"] == "AWS::Lambda::Function"
        and resource["Properties"]["Handler"] == c.HANDLER_FANOUT_WORKER
    ]
    [invoke_config] = [
        config
        for config in properties("AWS::Lambda::EventInvokeConfig")
        if config["FunctionName"] == {"Ref": worker}
    ]
    assert invoke_config["MaximumRetryAttempts"] == 0
    assert "DestinationConfig" not in invoke_config
    [alarm] = [
        alarm
        for alarm in properties("AWS::CloudWatch::Alarm")
        if alarm.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": worker}}]
        and alarm["MetricName"] == "Errors"
    ]
    assert (alarm["Namespace"], alarm["Statistic"], alarm["Threshold"]) == ("AWS/Lambda", "Sum", 0)
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
