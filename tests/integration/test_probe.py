"""The synthetic probe's code against the local stack: the handler, its environment pointed at the local
stack (the signing key from moto's Secrets Manager, the publish request signed as the local publisher),
measures both transports, and what subscribers see of its `system.status` event."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from aws_lambda_powertools.utilities.parameters import clear_caches

from handlers import composition
from handlers import probe as probe_handler
from local.lambda_runtime import LocalContext
from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from streaming import constants as c
from streaming.probe import run
from tests.conftest import new_id, signal
from tests.integration.conftest import outputs, running_local_stack, until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(tmp_path_factory.mktemp("probe")) as state:
        yield state


def closed_port() -> int:
    """A loopback port nothing listens on (bound for a moment to find one, then closed)."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


@pytest.fixture
def probe_environment(stack, monkeypatch) -> Iterator[dict[str, str]]:
    """The probe function's environment as the stack renders it, with the local stack's URLs and
    secret; AWS calls go to moto, the publish request is signed as the local publisher."""
    endpoints, config, credentials = outputs(stack), load("dev"), stack.credentials()
    environment = {
        **config.probe_settings(
            endpoints["WebSocketUrl"], endpoints["SseUrl"], endpoints["PublishUrl"]
        ).to_env(),
        **config.auth_settings(endpoints["AuthSecretArn"]).to_env(),
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoints["AwsEndpointUrl"],
        "AWS_ACCESS_KEY_ID": credentials.access_key_id,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    forget_the_environment()
    yield environment
    forget_the_environment()


def forget_the_environment() -> None:
    composition.probe_settings.cache_clear()
    composition.probe_publisher.cache_clear()
    clear_caches()  # Powertools' providers (their clients are built for an endpoint at first use)


def invoke_probe(capsys) -> tuple[dict[str, Any], dict[str, list[tuple[dict[str, str], float]]]]:
    """The handler's answer, and what it emitted: metric name -> [(dimensions, value)]."""
    answer = probe_handler.handler({}, LocalContext("probe", timeout_seconds=c.PROBE_TIMEOUT_SECONDS))
    output = capsys.readouterr().out
    assert "eyJ" not in output  # no token (a JWT's header) in a log line or metric
    emitted: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in output.splitlines():
        document = json.loads(line) if line.startswith("{") else {}
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            dimensions = {name: document[name] for name in directive["Dimensions"][0]}
            for metric in directive["Metrics"]:
                for value in document[metric["Name"]]:
                    emitted.setdefault(metric["Name"], []).append((dimensions, value))
    return answer, emitted


def by_transport(emitted, name: str) -> dict[str, float]:
    return {dimensions["transport"]: value for dimensions, value in emitted.get(name, [])}


class Subscriber:
    """A WebSocket subscriber of one role, keeping every event it receives."""

    def __init__(self, stack: LocalState, role: str) -> None:
        self.stack, self.role = stack, role
        self.events: list[dict[str, Any]] = []

    async def subscribe(self, *types: str) -> dict[str, Any]:
        token = issue(self.stack, self.role, f"{self.role}-{new_id()[:8]}")
        self.ws = await websockets.connect(
            outputs(self.stack)["WebSocketUrl"], subprotocols=["streaming.v1", f"token.{token}"]
        )
        await self.ws.send(json.dumps({"action": "subscribe", "types": list(types)}))
        while (message := json.loads(await self.ws.recv()))["type"] != "subscribed":
            pass
        self.reader = asyncio.create_task(self._read())
        return message

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message["type"] == "events":
                self.events += message["events"]

    def types(self) -> set[str]:
        return {event["type"] for event in self.events}

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


def test_the_probe_sees_its_event_on_both_transports_and_only_admins_see_it(stack, probe_environment, capsys):
    async def scenario() -> tuple[dict[str, Any], Any, Subscriber, Subscriber]:
        admin, viewer = Subscriber(stack, "admin"), Subscriber(stack, "viewer")
        await admin.subscribe(c.PROBE_EVENT_TYPE)
        refused = await viewer.subscribe(c.PROBE_EVENT_TYPE, "signal.created")
        assert refused["denied"] == [c.PROBE_EVENT_TYPE]
        try:
            answer, emitted = await asyncio.to_thread(invoke_probe, capsys)
            await until(lambda: any(e["id"] == answer["event_id"] for e in admin.events))
            # Published after the probe's event was delivered: once the viewer has it, it has had every
            # chance to get the probe's event too.
            later = signal()
            local_client(stack).publish(later)
            await until(lambda: any(e["id"] == later["id"] for e in viewer.events))
        finally:
            await admin.close()
            await viewer.close()
        return answer, emitted, admin, viewer

    answer, emitted, admin, viewer = asyncio.run(scenario())
    assert answer["published"] is True
    assert {name: t["received"] for name, t in answer["transports"].items()} == {
        "websocket": True,
        "sse": True,
    }
    assert by_transport(emitted, "ProbeSuccess") == {"websocket": 1, "sse": 1}
    latencies = by_transport(emitted, "ProbeLatency")
    assert set(latencies) == {"websocket", "sse"} and all(latency > 0 for latency in latencies.values())
    assert [value for _, value in emitted["ProbePublishSuccess"]] == [1]
    [seen] = [event for event in admin.events if event["id"] == answer["event_id"]]
    assert seen["type"] == c.PROBE_EVENT_TYPE
    assert (seen["data"]["component"], seen["data"]["status"]) == (c.PROBE_COMPONENT, "ok")
    assert c.PROBE_EVENT_TYPE not in viewer.types()


def test_a_transport_that_cannot_be_reached_fails_alone(stack, probe_environment, monkeypatch, capsys):
    monkeypatch.setenv(c.ENV_PROBE_WEBSOCKET_URL, f"ws://127.0.0.1:{closed_port()}/")
    answer, emitted = invoke_probe(capsys)
    assert by_transport(emitted, "ProbeSuccess") == {"websocket": 0, "sse": 1}
    assert set(by_transport(emitted, "ProbeLatency")) == {"sse"}
    assert answer["transports"]["websocket"]["reason"].startswith("not ready: ConnectionRefusedError")
    assert [value for _, value in emitted["ProbePublishSuccess"]] == [1]


def test_the_sse_endpoint_missing_fails_sse_and_not_the_websocket(
    stack, probe_environment, monkeypatch, capsys
):
    monkeypatch.setenv(c.ENV_PROBE_SSE_URL, outputs(stack)["SseUrl"] + "nowhere/")
    answer, emitted = invoke_probe(capsys)
    assert by_transport(emitted, "ProbeSuccess") == {"websocket": 1, "sse": 0}
    assert answer["transports"]["sse"]["reason"].startswith("not ready: NotReady: HTTP 404")


def test_a_refused_publish_fails_the_publish_and_both_transports(
    stack, probe_environment, monkeypatch, capsys
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-local-publishers")
    answer, emitted = invoke_probe(capsys)
    assert [value for _, value in emitted["ProbePublishSuccess"]] == [0]
    assert answer["publish_reason"] == "HTTPError: HTTP Error 403: Forbidden"
    assert by_transport(emitted, "ProbeSuccess") == {"websocket": 0, "sse": 0}


def test_a_role_that_may_not_see_the_probes_type_is_no_success(stack):
    """The domain run with a viewer's token: neither transport subscribes, so neither can pass."""
    endpoints = outputs(stack)
    result = asyncio.run(
        run(
            endpoints["WebSocketUrl"],
            endpoints["SseUrl"] + "events",
            issue(stack, "viewer", "probe-as-viewer"),
            local_client(stack).publish,
        )
    )
    assert result.published
    reasons = {arrival.transport: (arrival.received, arrival.reason) for arrival in result.arrivals}
    assert reasons == {
        "websocket": (False, f"not ready: NotReady: {c.PROBE_EVENT_TYPE} denied to the token's role"),
        "sse": (False, "not ready: NotReady: HTTP 403 type_not_allowed"),
    }
