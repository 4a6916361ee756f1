"""The SSE app's own housekeeping (its requests are tested end to end in tests/integration/test_sse.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sse.app import _lease_returned

pytestmark = pytest.mark.connections


def test_a_lease_that_could_not_be_returned_is_logged_not_left_as_an_unretrieved_error(caplog):
    async def scenario() -> None:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(ConnectionError("table unreachable"))
        _lease_returned(failed, "alice")
        returned: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        returned.set_result(None)
        _lease_returned(returned, "bob")

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    warnings = [r for r in caplog.records if r.getMessage() == "sse lease not returned"]
    assert [(r.subject, r.error) for r in warnings] == [("alice", "ConnectionError")]  # type: ignore[attr-defined]
