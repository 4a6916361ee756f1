"""The connection registry on moto: role-checked subscriptions found by Query, exact removal."""

from __future__ import annotations

import time

import pytest

from local.aws import create_connections_table
from streaming import constants as c
from streaming.connections import ConnectionRegistry

pytestmark = pytest.mark.connections
TABLE = "connections-test"


@pytest.fixture
def registry(dynamodb, settings, clock):
    create_connections_table(dynamodb, TABLE)
    return ConnectionRegistry(dynamodb, TABLE, settings.roles, clock=clock)


def subscribed(registry, event_type):
    return sorted((s.connection_id, s.role) for s in registry.subscribers(event_type))


def test_a_connection_lives_until_its_token_or_the_gateway_limit_expires(registry, clock):
    far = registry.connect("A", "alice", "viewer", token_expires_at=int(clock()) + 86400)
    assert abs(far.expires_at - (int(clock.now) + c.CONNECTION_TTL_SECONDS)) <= 1
    soon = registry.connect("B", "bob", "viewer", token_expires_at=int(clock()) + 60)
    assert soon.expires_at <= int(clock.now) + 60
    clock.advance(61)
    assert registry.get("B") is None
    assert registry.get("A") is not None


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
