"""Replay for a subscriber: the role matrix is re-checked on every read, never trusted from the past."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from streaming import cursor as cursors
from streaming.errors import ErrorCode, StreamingError
from streaming.results import Page
from streaming.roles import RoleMatrix

if TYPE_CHECKING:  # the protocol's limits load in functions that build no store (the sweeper)
    from streaming.store import EventStore

MAX_REPLAY_LIMIT = 1000


def replay_after(
    store: EventStore,
    roles: RoleMatrix,
    role: str,
    cursor: str | None,
    types: Iterable[str] | None = None,
    limit: int = 100,
) -> Page:
    """Everything the role may see (narrowed to `types`) after the opaque `cursor`."""
    _check_limit(limit)
    return store.after(cursors.decode(cursor), roles.visible(role, types), limit)


def replay_latest(
    store: EventStore, roles: RoleMatrix, role: str, count: int, types: Iterable[str] | None = None
) -> Page:
    """The last `count` events the role may see, with a cursor to continue live from."""
    _check_limit(count)
    return store.latest(roles.visible(role, types), count)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_REPLAY_LIMIT:
        raise StreamingError(ErrorCode.INVALID_QUERY, f"limit must be between 1 and {MAX_REPLAY_LIMIT}")
