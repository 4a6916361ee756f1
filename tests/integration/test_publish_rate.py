"""A publisher beyond its rate, against the local stack (SigV4 over loopback, the real handler on moto
server): a burst past the bucket is refused whole with 429 `rate_limited` and Retry-After, nothing of
it is claimed or stored, and the same request sent again after Retry-After stores each event once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import boto3
import pytest
from botocore.credentials import Credentials

from clients.publisher import PublishClient, PublishError
from local.publish import local_client
from local.state import LocalState
from tests.conftest import signal
from tests.integration.conftest import outputs, running_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.degradation]
# A burst of 5 events, then one every 4 s: 20 s to refill the bucket, so that each step that must be
# refused is, however slowly a loaded machine gets from one to the next.
RATE, BURST = 0.25, 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Any:
    with running_local_stack(
        tmp_path_factory.mktemp("rate"), "--publish-rate", str(RATE), str(BURST)
    ) as state:
        yield state


def claimed(state: LocalState, event_ids: list[str]) -> list[str]:
    """The ids among `event_ids` the store has claimed, read from the table itself."""
    table = boto3.client("dynamodb", endpoint_url=outputs(state)["AwsEndpointUrl"], region_name="us-east-1")
    name = outputs(state)["EventsTableName"]
    return [
        event_id
        for event_id in event_ids
        if "Item" in table.get_item(TableName=name, Key={"pk": {"S": f"event#{event_id}"}, "sk": {"N": "0"}})
    ]


def stored_ids(client: PublishClient) -> list[str]:
    return [event["id"] for event in client.events_after(types=["signal.created"], limit=1000)["events"]]


def test_a_burst_beyond_the_rate_is_refused_whole_and_stored_once_after_retry_after(stack):
    client = local_client(stack)
    first, second = [signal() for _ in range(BURST)], [signal() for _ in range(BURST)]
    client.publish(first)  # the whole burst
    heads = client.streams()

    with pytest.raises(PublishError) as refused:
        client.publish(second)

    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= BURST / RATE
    assert client.streams() == heads  # no seq taken
    assert claimed(stack, [event["id"] for event in second]) == []  # no id claimed
    assert stored_ids(client) == [event["id"] for event in first]

    time.sleep(refused.value.retry_after)
    answer = client.publish(second)  # the same request, once Retry-After has passed

    assert [event["duplicate"] for event in answer["events"]] == [False] * BURST
    assert stored_ids(client) == [event["id"] for event in first + second]
    print(
        f"publish rate: {RATE}/s, burst {BURST}: a second burst refused whole (429, Retry-After "
        f"{refused.value.retry_after} s, 0 of {BURST} ids claimed); sent again after it: {BURST} stored, "
        f"{len(stored_ids(client))} events in all, each once"
    )


def test_local_publish_reports_the_refusal_and_a_client_that_waits_gets_through(stack):
    third = [signal() for _ in range(BURST)]
    keys = stack.credentials()
    waiting = PublishClient.from_endpoints(
        stack.endpoints_file,
        credentials=Credentials(keys.access_key_id, keys.secret_access_key),
        rate_limit_wait=3 * BURST / RATE,
    )
    waiting.publish([signal() for _ in range(BURST)])  # waits for what the test before left, if any
    impatient = PublishClient.from_endpoints(
        stack.endpoints_file,
        credentials=Credentials(keys.access_key_id, keys.secret_access_key),
        rate_limit_wait=1,
    )
    with pytest.raises(PublishError) as refused:  # Retry-After is beyond what it may wait: it does not sleep
        impatient.publish(third)
    assert refused.value.retry_after is not None and refused.value.retry_after > 1

    cli = subprocess.run(
        [sys.executable, "-m", "local.publish", "--state-dir", str(stack.directory)],
        input=json.dumps(third),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert cli.returncode == 1, cli.stderr
    assert json.loads(cli.stderr)["error"]["code"] == "rate_limited"
    assert claimed(stack, [event["id"] for event in third]) == []
    started = time.monotonic()
    answer = waiting.publish(third)  # sleeps as Retry-After says, then sends the same ids again
    waited = time.monotonic() - started
    print(f"publish rate: PublishClient(rate_limit_wait=...) got through after {waited:.1f} s")
    assert [event["duplicate"] for event in answer["events"]] == [False] * BURST
    assert set(stored_ids(waiting)) >= {event["id"] for event in third}
