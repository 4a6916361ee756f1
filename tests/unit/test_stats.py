"""Connection stats on moto: counted from the partitions that list the connections, kept for
`GET /stats`, written as gauges."""

from __future__ import annotations

import json

import pytest

from streaming import stats
from streaming.leases import StreamLeases
from tests.conftest import CONNECTIONS_TABLE

pytestmark = pytest.mark.connections

ROLES = ["admin", "analyst", "approver", "viewer"]


@pytest.fixture
def leases(registry, dynamodb, clock):  # the registry fixture creates the connections table
    return StreamLeases(dynamodb, CONNECTIONS_TABLE, clock=clock)


def test_open_connections_are_counted_by_transport_and_role_and_active_ones_apart(registry, leases, clock):
    soon = int(clock()) + 60
    viewer = registry.connect("V", "val", "viewer", int(clock()) + 3600)
    registry.subscribe(viewer, ["signal.created", "proposal.created"])
    registry.connect("W", "wes", "viewer", int(clock()) + 3600)  # connected, subscribed to nothing
    analyst = registry.connect("A", "ann", "analyst", soon)
    registry.subscribe(analyst, ["signal.created"])
    leases.acquire("ann", 5, seconds=600, role="analyst", replaceable_after=15)
    leases.acquire("pat", 5, seconds=30, role="approver", replaceable_after=15)

    counted = stats.take(registry, leases, ["signal.created", "proposal.created", "risk.alert"], clock=clock)
    summary = counted.to_dict()
    assert summary["by_transport"] == {
        "websocket": {"total": 3, "active": 2, "by_role": {"analyst": 1, "viewer": 2}},
        "sse": {"total": 2, "active": 2, "by_role": {"analyst": 1, "approver": 1}},
    }
    assert (summary["total"], summary["active"]) == (5, 4)
    assert summary["by_role"] == {"analyst": 2, "approver": 1, "viewer": 2}
    assert summary["subscriptions"] == {"proposal.created": 1, "risk.alert": 0, "signal.created": 2}

    clock.advance(120)  # the analyst's token and the approver's stream (30 s + a minute's grace) are over
    later = stats.take(registry, leases, ["signal.created"], clock=clock).to_dict()
    assert later["by_transport"]["websocket"]["by_role"] == {"viewer": 2}
    assert later["by_transport"]["sse"]["by_role"] == {"analyst": 1}
    assert later["subscriptions"] == {"signal.created": 1}


def test_a_removed_connection_and_a_released_stream_are_no_longer_counted(registry, leases, clock):
    connection = registry.connect("V", "val", "viewer", int(clock()) + 3600)
    registry.subscribe(connection, ["signal.created"])
    lease = leases.acquire("val", 5, seconds=600, role="viewer", replaceable_after=15)
    assert lease is not None
    registry.remove("V")
    leases.release("val", lease)
    counted = stats.take(registry, leases, ["signal.created"], clock=clock).to_dict()
    assert (counted["total"], counted["active"], counted["subscriptions"]) == (0, 0, {"signal.created": 0})


def test_saved_stats_are_read_back_until_they_are_an_hour_old(registry, leases, dynamodb, clock):
    assert stats.load(dynamodb, CONNECTIONS_TABLE, clock=clock) is None
    registry.connect("V", "val", "viewer", int(clock()) + 3600)
    counted = stats.take(registry, leases, [], clock=clock)
    stats.save(dynamodb, CONNECTIONS_TABLE, counted, clock=clock)
    assert stats.load(dynamodb, CONNECTIONS_TABLE, clock=clock) == counted.to_dict()
    clock.advance(stats.KEEP_SECONDS + 1)  # the sweep stopped: no stats rather than old ones
    assert stats.load(dynamodb, CONNECTIONS_TABLE, clock=clock) is None


def test_the_gauges_cover_every_role_on_both_transports_zeros_included(registry, leases, clock, capsys):
    registry.connect("V", "val", "viewer", int(clock()) + 3600)
    stats.record(stats.take(registry, leases, [], clock=clock), ROLES)
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    gauges = {(d["transport"], d["role"]): d["ConnectionsOpen"] for d in documents if "ConnectionsOpen" in d}
    assert len(gauges) == 8
    assert gauges[("websocket", "viewer")] == [1.0]
    assert {value[0] for key, value in gauges.items() if key != ("websocket", "viewer")} == {0.0}
    active = {d["transport"]: d["ConnectionsActive"] for d in documents if "ConnectionsActive" in d}
    assert active == {"websocket": [0.0], "sse": [0.0]}


def test_a_connection_registered_before_expiry_records_named_its_role_counts_as_unknown(
    registry, leases, dynamodb, clock
):
    registry.connect("V", "val", "viewer", int(clock()) + 3600)
    [item] = dynamodb.query(
        TableName=CONNECTIONS_TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "expiry"}},
    )["Items"]
    dynamodb.put_item(TableName=CONNECTIONS_TABLE, Item={k: v for k, v in item.items() if k != "role"})
    assert stats.take(registry, leases, [], clock=clock).to_dict()["by_role"] == {"unknown": 1}
