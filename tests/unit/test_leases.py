"""Stream leases on moto: a subject holds at most the limit, leases return on release or expiry."""

from __future__ import annotations

import pytest

from stacks.table_layouts import CONNECTIONS, create_table
from streaming.leases import GRACE_SECONDS, StreamLeases
from tests.conftest import CONNECTIONS_TABLE

pytestmark = pytest.mark.connections


@pytest.fixture
def leases(dynamodb, clock):
    create_table(dynamodb, CONNECTIONS_TABLE, CONNECTIONS)
    return StreamLeases(dynamodb, CONNECTIONS_TABLE, clock=clock)


def test_a_subject_holds_at_most_the_limit_and_others_are_not_counted(leases):
    held = [leases.acquire("alice", 2, seconds=60, role="viewer") for _ in range(2)]
    assert all(held) and len(set(held)) == 2
    assert leases.acquire("alice", 2, seconds=60, role="viewer") is None
    assert leases.acquire("bob", 2, seconds=60, role="viewer") is not None


def test_a_released_lease_frees_its_place(leases):
    first = leases.acquire("alice", 1, seconds=60, role="viewer")
    assert first is not None and leases.acquire("alice", 1, seconds=60, role="viewer") is None
    leases.release("alice", first)
    assert leases.acquire("alice", 1, seconds=60, role="viewer") is not None


def test_a_lease_whose_stream_ended_unnoticed_expires_by_itself(leases, clock):
    assert leases.acquire("alice", 1, seconds=30, role="viewer") is not None
    clock.advance(30 + GRACE_SECONDS - 1)
    assert leases.acquire("alice", 1, seconds=30, role="viewer") is None
    clock.advance(2)
    assert leases.acquire("alice", 1, seconds=30, role="viewer") is not None
