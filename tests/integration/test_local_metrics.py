"""`/metrics` of the local stack: what the handlers of both its processes emitted (EMF), in Prometheus
text format, read back after driving the stack as a client would."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from local.publish import local_client
from local.state import LocalState
from local.token import issue
from tests.conftest import signal
from tests.integration.conftest import outputs, running_local_stack, until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]
PUBLISHED = 5
TIMEOUT = 30
SAMPLE = re.compile(r"^(?P<series>[a-z_]+(?:\{.*\})?) (?P<value>\S+)$")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("metrics")) as state:
        yield state


def scrape(stack: LocalState) -> dict[str, float]:
    """Every sample of the exposition, by its series as written (`name{label="value",...}`)."""
    response = httpx.get(outputs(stack)["MetricsUrl"], timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = {}
    for line in response.text.splitlines():
        if not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            found[match["series"]] = float(match["value"])
    return found


def reaches(stack: LocalState, expected: dict[str, float]) -> dict[str, float]:
    """Waits until every series of `expected` is at least its value; the last scrape."""
    latest: dict[str, float] = {}

    def reached() -> bool:
        latest.update(scrape(stack))
        return all(latest.get(series, -1) >= least for series, least in expected.items())

    asyncio.run(until(reached, TIMEOUT, strict=False))
    return latest


async def websocket(stack: LocalState, token: str) -> Any:
    return await websockets.connect(
        outputs(stack)["WebSocketUrl"], subprotocols=["streaming.v1", f"token.{token}"]
    )


async def receive_events(ws: Any, count: int) -> list[str]:
    ids: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while len(ids) < count:
            message = json.loads(await ws.recv())
            ids += [event["id"] for event in message.get("events", [])]
    return ids


@pytest.mark.connections
def test_metrics_count_what_clients_did_connect_publish_deliver_and_a_refused_token(stack):
    async def scenario() -> None:
        ws = await websocket(stack, issue(stack, "viewer", "metrics-viewer"))
        await ws.send(json.dumps({"action": "subscribe", "types": ["signal.created"], "id": "s"}))
        async with asyncio.timeout(TIMEOUT):
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
        events = [signal() for _ in range(PUBLISHED)]
        for event in events:  # one request each: a frame each
            await asyncio.to_thread(local_client(stack).publish, event)
        assert await receive_events(ws, PUBLISHED) == [event["id"] for event in events]
        await ws.close()
        with pytest.raises(InvalidStatus) as refused:
            await websocket(stack, "not-a-token")
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())
    expected = {
        "streaming_events_published_total": PUBLISHED,
        "streaming_frames_delivered_total": PUBLISHED,
        'streaming_events_published_total{type="signal.created"}': PUBLISHED,
        "streaming_publish_batch_size_total": PUBLISHED,
        "streaming_connections_refused_total": 1,
        'streaming_auth_failures_total{reason="malformed",transport="websocket"}': 1,
        "streaming_connections_authorized_total": 1,
        'streaming_disconnects_total{kind="planned",transport="websocket"}': 1,
        # The sweep's gauges (every 5 s locally): someone was connected meanwhile, or is now.
        'streaming_connections_open{role="viewer",transport="websocket"}': 0,
        'streaming_connections_opened_total{role="viewer",transport="websocket"}': 1,
        'streaming_connections_closed_total{transport="websocket"}': 1,
        "streaming_delivery_latency_seconds_count": 1,
        'streaming_delivery_latency_seconds_bucket{le="+Inf"}': 1,
    }
    metrics = reaches(stack, expected)
    short = {
        series: metrics.get(series) for series, least in expected.items() if metrics.get(series, -1) < least
    }
    assert short == {}


@pytest.mark.connections
def test_gateway_counts_go_on_across_a_restart_of_the_gateway(stack):
    async def connect_once() -> None:
        ws = await websocket(stack, issue(stack, "analyst", "metrics-restart"))
        await ws.close()

    asyncio.run(connect_once())
    opened = 'streaming_connections_opened_total{role="analyst",transport="websocket"}'
    before = reaches(stack, {opened: 1})[opened]
    tools = outputs(stack)["LivePageUrl"].removesuffix("live/")
    for action in ("stop", "start"):
        assert httpx.post(f"{tools}local/gateway/{action}", timeout=TIMEOUT).json()["running"] == (
            action == "start"
        )
    asyncio.run(connect_once())
    assert reaches(stack, {opened: before + 1})[opened] == before + 1


def test_metrics_answer_loopback_host_names_only(stack):
    url = outputs(stack)["MetricsUrl"]
    assert url.endswith("/metrics") and url.startswith("http://127.0.0.1:")
    assert httpx.get(url, headers={"Host": "metrics.example"}, timeout=TIMEOUT).status_code == 421
