"""The connection registry on moto: role-checked subscriptions found by Query, exact removal."""

from __future__ import annotations

import time

import pytest

from stacks.table_layouts import CONNECTIONS, create_table
from streaming import constants as c
from streaming.connections import ConnectionRegistry
from streaming.dynamo import serialize
from streaming.ratelimit import Admission, TokenBucket
from tests.conftest import CONNECTIONS_TABLE

pytestmark = pytest.mark.connections


def admit(registry, connection_id, bucket):
    return registry.admit(connection_id, bucket)[1]


def subscribed(registry, event_type):
    return sorted((s.connection_id, s.role) for s in registry.subscribers(event_type))


def test_a_connection_lives_until_its_token_or_the_gateway_limit_expires(registry, clock):
    far = registry.connect("A", "alice", "viewer", token_expires_at=int(clock()) + 86400)
    assert abs(far.expires_at - (int(clock.now) + c.MAX_CONNECTION_SECONDS)) <= 1
    soon = registry.connect("B", "bob", "viewer", token_expires_at=int(clock()) + 60)
    assert soon.expires_at <= int(clock.now) + 60
    clock.advance(61)
    assert registry.get("B") is None
    assert registry.get("A") is not None


def test_a_connection_expires_before_api_gateways_two_hour_cut_and_its_records_outlive_it(
    registry, dynamodb, clock
):
    connected_at = int(clock())
    connection = registry.connect("A", "alice", "viewer", token_expires_at=connected_at + 86400)
    # At the latest one sweep before API Gateway's cut, so the sweep closes it itself.
    assert connection.expires_at <= connected_at + 2 * 3600 - c.SWEEP_INTERVAL_MINUTES * 60
    registry.subscribe(connection, ["signal.created"])
    items = dynamodb.scan(TableName=CONNECTIONS_TABLE)["Items"]
    ttls = {item["pk"]["S"]: int(item[c.TTL_ATTRIBUTE]["N"]) for item in items}
    assert ttls["connection#A"] == ttls["type#signal.created"] > connection.expires_at
    clock.advance(connection.expires_at - clock.now + 1)  # expired, its records not yet deleted by TTL
    assert registry.get("A") is None
    assert subscribed(registry, "signal.created") == []
    assert [connection_id for connection_id, _ in registry.expiry.due()] == ["A"]


def test_the_connection_limit_can_be_shortened_where_the_gateway_cuts_sooner(dynamodb, settings, clock):
    short = ConnectionRegistry(
        dynamodb, CONNECTIONS_TABLE, settings.roles, clock=clock, max_connection_seconds=20
    )
    create_table(dynamodb, CONNECTIONS_TABLE, CONNECTIONS)
    assert short.connect("S", "sam", "viewer", int(clock()) + 3600).expires_at <= int(clock.now) + 20


def test_subscriptions_are_the_role_grant_narrowed_to_the_request(registry):
    viewer = registry.connect("V", "val", "viewer", int(time.time()) + 3600)
    approver = registry.connect("P", "pat", "approver", int(time.time()) + 3600)
    assert registry.subscribe(viewer, ["signal.created", "risk.alert"]) == {"signal.created"}
    assert registry.subscribe(approver, ["risk.alert", "system.status"]) == {"risk.alert"}
    assert subscribed(registry, "signal.created") == [("V", "viewer")]
    assert subscribed(registry, "risk.alert") == [("P", "approver")]
    assert subscribed(registry, "system.status") == []
    assert registry.get("V").types == {"signal.created"}


def test_unsubscribe_and_remove_touch_exactly_one_connection(registry):
    first = registry.connect("one", "a", "admin", int(time.time()) + 3600)
    second = registry.connect("two", "b", "admin", int(time.time()) + 3600)
    types = registry.subscribe(first, ["signal.created", "risk.alert", "system.status"])
    registry.subscribe(second, ["risk.alert"])
    remaining = registry.unsubscribe(registry.get("one"), ["system.status"])
    assert remaining == types - {"system.status"}
    assert subscribed(registry, "system.status") == []
    registry.remove("one")
    assert registry.get("one") is None
    assert subscribed(registry, "risk.alert") == [("two", "admin")]
    assert subscribed(registry, "signal.created") == []


def test_expired_subscriptions_are_not_returned_before_ttl_deletes_them(registry, clock):
    connection = registry.connect("C", "c", "analyst", token_expires_at=int(clock()) + 30)
    registry.subscribe(connection, ["decision.made"])
    assert subscribed(registry, "decision.made") == [("C", "analyst")]
    clock.advance(31)
    assert subscribed(registry, "decision.made") == []


def test_subscribing_a_connection_that_is_gone_says_so(registry):
    ghost = registry.connect("G", "g", "viewer", int(time.time()) + 3600)
    registry.remove("G")
    with pytest.raises(LookupError, match="gone"):
        registry.subscribe(ghost, ["signal.created"])
    assert subscribed(registry, "signal.created") == []  # no orphaned subscription left behind


def test_the_rate_limit_admits_a_burst_then_the_refill_rate(registry, clock):
    bucket = TokenBucket(rate=10, burst=20)
    registry.connect("R", "r", "viewer", int(clock()) + 3600)
    admitted = [admit(registry, "R", bucket).allowed for _ in range(25)]
    assert admitted.count(True) in (20, 21)  # the burst (the ticking clock may refill a part of one)
    refused = admit(registry, "R", bucket)
    assert not refused.allowed and refused.strikes >= 1
    clock.advance(0.5)  # refills 5 tokens
    assert [admit(registry, "R", bucket).allowed for _ in range(5)] == [True] * 5
    assert admit(registry, "R", bucket).strikes >= 1


def test_refusals_count_as_strikes_until_the_bucket_is_full_again(registry, clock):
    bucket = TokenBucket(rate=1, burst=1)
    registry.connect("S", "s", "viewer", int(clock()) + 3600)
    assert admit(registry, "S", bucket).allowed
    assert [admit(registry, "S", bucket).strikes for _ in range(3)] == [1, 2, 3]
    clock.advance(2)
    assert admit(registry, "S", bucket) == Admission(True, 0)


def test_a_client_sending_faster_than_the_rate_keeps_its_strikes(registry, clock):
    bucket = TokenBucket(rate=1, burst=3)
    registry.connect("T", "t", "viewer", int(clock()) + 3600)
    assert [admit(registry, "T", bucket).allowed for _ in range(3)] == [True] * 3
    assert [admit(registry, "T", bucket).strikes for _ in range(2)] == [1, 2]
    clock.advance(1.1)  # one token back: admitted, but the bucket is not full
    assert admit(registry, "T", bucket) == Admission(True, 2)
    assert admit(registry, "T", bucket).strikes == 3


def test_only_the_first_message_of_a_connection_is_marked_first(registry, clock):
    bucket = TokenBucket(rate=10, burst=20)
    registry.connect("F", "f", "analyst", int(clock()) + 3600)
    connection, first = registry.admit("F", bucket)
    assert first.first and connection.role == "analyst"
    assert [admit(registry, "F", bucket).first for _ in range(3)] == [False] * 3


def test_a_gone_or_expired_connection_is_not_admitted(registry, clock):
    registry.connect("E", "e", "viewer", int(clock()) + 10)
    clock.advance(11)
    with pytest.raises(LookupError, match="gone or expired"):
        registry.admit("E", TokenBucket(rate=1, burst=1))
    with pytest.raises(LookupError):
        registry.admit("never-connected", TokenBucket(rate=1, burst=1))


def test_subscribers_carry_every_type_their_connection_subscribes_to(registry, clock):
    connection = registry.connect("C", "c", "admin", int(clock.now) + 60)
    registry.subscribe(connection, ["risk.alert"])
    registry.subscribe(registry.get("C"), ["signal.created", "proposal.updated"])
    expected = {"risk.alert", "signal.created", "proposal.updated"}
    assert [s.types for t in sorted(expected) for s in registry.subscribers(t)] == [expected] * 3
    registry.unsubscribe(registry.get("C"), ["risk.alert"])
    assert [s.types for s in registry.subscribers("signal.created")] == [expected - {"risk.alert"}]


def test_of_two_racing_subscription_changes_the_later_ones_types_stay(registry, clock, dynamodb):
    connection = registry.connect("C", "c", "admin", int(clock.now) + 60)
    registry.subscribe(connection, ["signal.created"])
    newer = registry.subscribe(registry.get("C"), ["proposal.updated"])
    # The first change's item write, landing late, does not overwrite the second's.
    registry._write_subscriptions(connection, frozenset({"signal.created"}), 1, first=frozenset())
    assert [s.types for s in registry.subscribers("signal.created")] == [newer]


def test_a_bucket_belongs_to_its_connection(registry, clock):
    bucket = TokenBucket(rate=1, burst=1)
    registry.connect("X", "x", "viewer", int(clock()) + 3600)
    registry.connect("Y", "y", "viewer", int(clock()) + 3600)
    assert admit(registry, "X", bucket).allowed and not admit(registry, "X", bucket).allowed
    assert admit(registry, "Y", bucket).allowed


def test_token_bucket_arithmetic():
    bucket = TokenBucket(rate=2, burst=3)
    assert bucket.take(0, at=0, now=0.25) == (False, 0.5)
    assert bucket.take(0.5, at=0.25, now=0.5) == (True, 0.0)
    assert bucket.take(3, at=0, now=100) == (True, 2.0)  # never more than the burst
    assert bucket.take(1, at=10, now=5) == (True, 0.0)  # a clock step back refills nothing


def test_expired_connections_come_due_until_their_expiry_record_is_forgotten(registry, clock):
    registry.connect("soon", "s", "viewer", int(clock()) + 5)
    registry.connect("later", "l", "viewer", int(clock()) + 3600)
    registry.connect("gone", "g", "viewer", int(clock()) + 5)
    registry.remove("gone")  # disconnected: nothing left to sweep
    assert registry.expiry.due() == []
    clock.advance(6)
    [(connection_id, expiry_key)] = registry.expiry.due()
    assert connection_id == "soon"
    assert registry.expiry.due() == [(connection_id, expiry_key)]  # not closed yet: still due
    registry.expiry.forget(expiry_key)
    assert registry.expiry.due() == []
    clock.advance(3600)
    assert [connection_id for connection_id, _ in registry.expiry.due()] == ["later"]


def test_remove_also_drops_subscriptions_its_record_does_not_list(registry, dynamodb, clock):
    # A subscribe racing $disconnect: the record was removed, then the subscription written.
    connection = registry.connect("R", "r", "viewer", int(clock()) + 3600)
    registry.remove("R")
    orphan = {"pk": "type#signal.created", "sk": "R", "role": "viewer", "expires_at": connection.expires_at}
    dynamodb.put_item(TableName=CONNECTIONS_TABLE, Item=serialize(orphan))
    assert subscribed(registry, "signal.created") == [("R", "viewer")]
    registry.remove("R", ["signal.created"])
    assert subscribed(registry, "signal.created") == []


def test_an_unsubscribe_racing_a_subscribe_leaves_no_subscription_behind(registry, clock):
    connection = registry.connect("C", "c", "admin", int(clock.now) + 60)
    registry.subscribe(connection, ["signal.created"])
    stale = registry.get("C")
    registry.unsubscribe(stale, ["signal.created"])
    # A subscribe that read the connection before the unsubscribe writes its items after it.
    registry._write_subscriptions(stale, frozenset({"signal.created", "risk.alert"}), 1, first=stale.types)
    assert list(registry.subscribers("signal.created")) == []
    registry.remove("C")
    assert list(registry.subscribers("signal.created")) == [] and registry.get("C") is None
