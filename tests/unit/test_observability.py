"""Metrics written at once (EMF), with dimensions of their own."""

from __future__ import annotations

import json

from streaming.observability import count


def test_a_counted_measurement_carries_its_own_dimensions_besides_the_service(capsys):
    count("ConnectionsOpened", role="analyst", transport="sse")
    [document] = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "ConnectionsOpened" in line
    ]
    assert document["ConnectionsOpened"] == [1.0]
    assert (document["service"], document["role"], document["transport"]) == ("streaming", "analyst", "sse")
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert set(directive["Dimensions"][0]) == {"service", "role", "transport"}
