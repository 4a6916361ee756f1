"""A short chaos run (tests/chaos.py) in every `make test`: subscribers of every role over both
transports, connections cut by clients and by the server, several publishers. Every application gets
every event of its types exactly once and in order, and nothing else."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.chaos import chaos
from tests.integration.conftest import running_local_stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.reconnect,
    pytest.mark.load,
    pytest.mark.xdist_group("local-stack"),
]


def test_random_cuts_on_both_transports_lose_nothing_and_repeat_nothing(tmp_path):
    with running_local_stack(tmp_path, "--sse-max-stream-seconds", "6") as state:
        figures = asyncio.run(chaos(state, subscribers=12, events=300, publishers=4, cut_rate=0.25, seed=14))
    print(json.dumps(figures))
    assert figures["unfinished"] == 0
    assert figures["expected_deliveries"] > 300
    assert figures["delivered_to_applications"] == figures["expected_deliveries"]
    for name in ("lost", "duplicates_at_application", "out_of_order", "unauthorized_or_unasked"):
        assert figures[name] == 0, name
    assert figures["client_cuts"] > 0 and figures["server_cuts"] > 0
