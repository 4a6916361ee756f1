"""Stream leases on moto: at its cap a subject's newest stream wins and its oldest lease is gone
(once old enough to be replaced); leases return on release or expiry; the open streams are listed."""

from __future__ import annotations

import pytest

from stacks.table_layouts import CONNECTIONS, create_table
from streaming.leases import GRACE_SECONDS, StreamLeases
from tests.conftest import CONNECTIONS_TABLE

pytestmark = pytest.mark.connections
HEARTBEAT = 15  # what the SSE plan passes as `replaceable_after`


@pytest.fixture
def leases(dynamodb, clock):
    create_table(dynamodb, CONNECTIONS_TABLE, CONNECTIONS)
    return StreamLeases(dynamodb, CONNECTIONS_TABLE, clock=clock)


def acquire(leases, subject, limit, *, seconds=60, role="viewer", replaceable_after=HEARTBEAT):
    return leases.acquire(subject, limit, seconds, role=role, replaceable_after=replaceable_after)


def test_at_its_cap_the_newest_stream_gets_a_lease_and_the_oldest_is_gone(leases, clock):
    first = acquire(leases, "alice", 2, seconds=600)
    clock.advance(1)
    second = acquire(leases, "alice", 2, seconds=600)
    bob = acquire(leases, "bob", 2, role="analyst")
    clock.advance(HEARTBEAT + 1)
    newest = acquire(leases, "alice", 2, seconds=600)
    assert newest is not None and len({first, second, newest}) == 3
    assert [leases.held("alice", lease) for lease in (first, second, newest)] == [False, True, True]
    assert leases.held("bob", bob)  # another subject's lease is not counted, nor replaced
    assert sorted(leases.open_roles()) == ["analyst", "viewer", "viewer"]


def test_the_first_to_expire_is_the_one_replaced(leases, clock):
    """Oldest means first to expire: a stream planned short (its token expiring) goes before an
    older one planned long."""
    long = acquire(leases, "alice", 2, seconds=600)
    short = acquire(leases, "alice", 2, seconds=30)
    clock.advance(HEARTBEAT + 1)
    assert acquire(leases, "alice", 2) is not None
    assert (leases.held("alice", long), leases.held("alice", short)) == (True, False)


def test_leases_younger_than_a_heartbeat_are_not_replaced_so_the_newest_is_refused(leases, clock):
    """Two streams opened at once never replace each other; the refusal lasts until the oldest is
    old enough."""
    held = [acquire(leases, "alice", 2) for _ in range(2)]
    assert acquire(leases, "alice", 2) is None
    assert all(leases.held("alice", lease) for lease in held)
    assert acquire(leases, "bob", 2) is not None
    clock.advance(HEARTBEAT + 1)
    assert acquire(leases, "alice", 2) is not None


def test_a_subject_over_its_cap_is_brought_back_to_it(leases, clock):
    """Racing acquires may leave a subject one over its cap: the next one replaces down to it."""
    over = []
    for _ in range(3):
        over.append(acquire(leases, "alice", 3))
        clock.advance(1)  # lease ids order by their expiry second
    clock.advance(HEARTBEAT)
    newest = acquire(leases, "alice", 2)
    assert [leases.held("alice", lease) for lease in [*over, newest]] == [False, False, True, True]
    assert len(list(leases.open_roles())) == 2


def test_a_released_lease_frees_its_place_and_its_listing(leases):
    first = acquire(leases, "alice", 1)
    assert first is not None and list(leases.open_roles()) == ["viewer"]
    leases.release("alice", first)
    assert not leases.held("alice", first) and list(leases.open_roles()) == []
    second = acquire(leases, "alice", 1)  # young as the first was: nothing had to be replaced
    assert second is not None and leases.held("alice", second)
    leases.release("alice", first)  # a lease released twice (replaced, then its stream ended)
    assert list(leases.open_roles()) == ["viewer"]


def test_an_expired_lease_does_not_count(leases, clock):
    never_replaced = 10**6  # so only its expiry can free the place
    assert acquire(leases, "alice", 1, seconds=30, replaceable_after=never_replaced) is not None
    clock.advance(30 + GRACE_SECONDS - 1)
    assert acquire(leases, "alice", 1, seconds=30, replaceable_after=never_replaced) is None
    assert list(leases.open_roles()) == ["viewer"]
    clock.advance(2)
    assert list(leases.open_roles()) == []
    assert acquire(leases, "alice", 1, seconds=30, replaceable_after=never_replaced) is not None
