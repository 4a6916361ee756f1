"""The role matrix as configured, and the opaque cursor."""

from __future__ import annotations

import base64

import pytest

from stacks.config import ENVIRONMENTS, load
from streaming import cursor
from streaming.errors import StreamingError
from streaming.roles import RoleMatrix

VIEWER = {"signal.created", "proposal.created", "proposal.updated"}
ANALYST = VIEWER | {"decision.made", "eval.completed"}
APPROVER = ANALYST | {"risk.alert"}
ADMIN = APPROVER | {"system.status"}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_configured_matrix_is_the_one_the_brief_specifies(environment):
    roles = RoleMatrix(load(environment).roles)
    assert roles.allowed("viewer") == VIEWER
    assert roles.allowed("analyst") == ANALYST
    assert roles.allowed("approver") == APPROVER
    assert roles.allowed("admin") == ADMIN


def test_unknown_role_sees_nothing_and_is_refused_for_subscriptions():
    roles = RoleMatrix({"viewer": VIEWER})
    assert roles.allowed("intruder") == frozenset()
    with pytest.raises(StreamingError) as raised:
        roles.visible("intruder")
    assert raised.value.error.code == "unknown_role"


def test_visible_is_the_intersection_of_grant_and_request():
    roles = RoleMatrix({"viewer": VIEWER})
    assert roles.visible("viewer") == VIEWER
    assert roles.visible("viewer", ["signal.created", "risk.alert"]) == {"signal.created"}
    assert roles.visible("viewer", []) == frozenset()


def test_cursor_round_trips_and_is_opaque():
    token = cursor.encode({"risk": 4, "market": 17})
    assert token.startswith("c1.") and "market" not in token
    assert cursor.decode(token) == {"market": 17, "risk": 4}
    assert cursor.decode(None) == {} and cursor.decode("") == {}


def _raw(text: str) -> str:
    return "c1." + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "c1.!!!",
        "c2." + cursor.encode({"a": 1})[3:],
        _raw("[1, 2]"),
        _raw('{"market": -1}'),
        _raw('{"market": "3"}'),
        _raw('{"market": true}'),
        _raw('{"Market#x": 3}'),
        "c1." + "A" * 2000,
    ],
)
def test_malformed_cursors_are_refused_with_their_code(token):
    with pytest.raises(StreamingError) as raised:
        cursor.decode(token)
    assert raised.value.error.code == "invalid_cursor"
