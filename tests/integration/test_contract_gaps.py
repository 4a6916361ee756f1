"""Contract paths the other integration tests do not reach, on the local stack:

- a replay from a cursor the replay window has passed says so: `truncated: true` over the WebSocket
  API, a `truncated` event over SSE. The local stack's replay window is the dev environment's 24 hours
  (at least an hour by configuration) and its clock is the real one, so the tests age the stored
  events instead, as the window does in DynamoDB: past their TTL but not yet deleted, or deleted.
- the EventBridge publish path end to end: moto's bus has no Lambda target, so the test plays
  EventBridge and invokes the EventBridge function through the local Lambda Invoke API (as EventBridge
  invokes its target), twice with the same event as EventBridge's retries can; a WebSocket and an SSE
  subscriber each get the event exactly once.
- `internal_error` on a real store failure: the events table is deleted from the local moto.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
import websockets
from httpx_sse import ServerSentEvent, connect_sse
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from local.publish import local_client
from local.state import LocalState
from local.token import issue
from stacks.config import load
from streaming import constants as c
from streaming import cursor as cursors
from streaming.codec import decode_event
from streaming.store.commit import TAIL_EVENTS
from tests.conftest import example, signal
from tests.integration.conftest import outputs, running_local_stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("local-stack")]
HEARTBEAT_SECONDS = 1
TIMEOUT = 20  # seconds any one expected message may take


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalState]:
    with running_local_stack(
        tmp_path_factory.mktemp("gaps"), "--sse-heartbeat-seconds", str(HEARTBEAT_SECONDS)
    ) as state:
        yield state


def aws(stack: LocalState, service: str) -> Any:
    values = outputs(stack)
    endpoint = values["LambdaEndpointUrl" if service == "lambda" else "AwsEndpointUrl"]
    return boto3.client(service, endpoint_url=endpoint, region_name=values["Region"])


def sse_url(stack: LocalState) -> str:
    return outputs(stack)["SseUrl"] + "events"


class Socket:
    """A WebSocket client speaking docs/protocol.md; keeps every message it has read."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def answer(self, kind: str, request_id: str) -> dict[str, Any]:
        """The answer of `kind` (or an error) to the message with `request_id`."""
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            self.seen.append(message)
            if message.get("id") == request_id and message["type"] in (kind, "error"):
                return message  # type: ignore[no-any-return]

    def events(self) -> list[dict[str, Any]]:
        return [event for m in self.seen if m["type"] == "events" for event in m["events"]]


async def open_socket(stack: LocalState, role: str) -> Socket:
    token = issue(stack, role, f"{role}-gaps")
    ws = await websockets.connect(
        outputs(stack)["WebSocketUrl"],
        subprotocols=[Subprotocol("streaming.v1"), Subprotocol(f"token.{token}")],
    )
    return Socket(ws)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 90))


# -- truncated ------------------------------------------------------------------------------------------


def age_out(stack: LocalState, stream: str, seq: int, how: str) -> None:
    """What the replay window does to an event: its TTL passes (DynamoDB keeps serving it until it gets
    round to deleting it; the store treats it as gone), then DynamoDB deletes it."""
    table, key = outputs(stack)["EventsTableName"], {"pk": {"S": f"stream#{stream}"}, "sk": {"N": str(seq)}}
    if how == "expired":
        aws(stack, "dynamodb").update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #ttl = :past",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#ttl": c.TTL_ATTRIBUTE},
            ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 60)}},
        )
    else:
        aws(stack, "dynamodb").delete_item(
            TableName=table, Key=key, ConditionExpression="attribute_exists(pk)"
        )


# Events published one by one after an event put it below the head's tail, in the table, where the
# replay window acts on it.
BELOW_THE_TAIL = TAIL_EVENTS


def published(stack: LocalState, settings: Any, event_type: str, count: int) -> list[dict[str, Any]]:
    client = local_client(stack)
    return [client.publish(example(event_type, settings)) for _ in range(count)]


@pytest.mark.reconnect
@pytest.mark.parametrize("how", ["expired", "deleted"])
def test_a_websocket_replay_from_a_cursor_the_window_has_passed_says_truncated(stack, settings, how):
    last_seen, aged, *after = published(stack, settings, "system.status", 2 + BELOW_THE_TAIL)
    age_out(stack, "ops", aged["seq"], how)
    from_last_seen = cursors.encode({"ops": last_seen["seq"]})
    from_aged = cursors.encode({"ops": aged["seq"]})

    async def scenario() -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        socket = await open_socket(stack, "admin")
        await socket.send(action="subscribe", types=["system.status"], id="s")
        await socket.answer("subscribed", "s")
        await socket.send(action="replay", cursor=from_last_seen, id="r1")
        truncated = await socket.answer("replay", "r1")
        replayed = [e["id"] for e in socket.events()]
        await socket.send(action="replay", cursor=from_aged, id="r2")  # nothing lost after this one
        complete = await socket.answer("replay", "r2")
        await socket.ws.close()
        return truncated, replayed, complete

    truncated, replayed, complete = run(scenario())
    assert (truncated["type"], truncated["truncated"], truncated["count"]) == ("replay", True, len(after))
    assert replayed == [e["id"] for e in after]  # what is left of the window, nothing aged
    assert (complete["truncated"], complete["count"]) == (False, len(after))


@pytest.mark.reconnect
def test_an_sse_resume_from_a_cursor_the_window_has_passed_gets_a_truncated_event(stack, settings):
    # Only this test reads `risk` over SSE in this stack: the SSE process keeps the events it has
    # tailed in memory and serves a resume it can from there (not the store, where the window acts).
    last_seen, expired, deleted, *after = published(stack, settings, "risk.alert", 3 + BELOW_THE_TAIL)
    age_out(stack, "risk", expired["seq"], "expired")
    age_out(stack, "risk", deleted["seq"], "deleted")
    cursor = cursors.encode({"risk": last_seen["seq"]})
    received: list[ServerSentEvent] = []
    token = issue(stack, "approver", "approver-gaps")
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=TIMEOUT)) as client,
        connect_sse(
            client, "GET", sse_url(stack), params={"token": token, "types": "risk.alert", "cursor": cursor}
        ) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if sse.event in ("truncated", "risk.alert"):
                received.append(sse)
            if sse.event == "risk.alert" and json.loads(sse.data)["id"] == after[-1]["id"]:
                break
    assert [sse.event for sse in received] == ["truncated", *["risk.alert"] * len(after)]
    assert json.loads(received[0].data) == {"cursor": cursor}
    assert [json.loads(sse.data)["id"] for sse in received[1:]] == [e["id"] for e in after]


# -- EventBridge ----------------------------------------------------------------------------------------


def eventbridge_event(stack: LocalState, source: str, raw: dict[str, Any]) -> dict[str, Any]:
    """What EventBridge passes its target for a PutEvents entry (Source, DetailType, Detail)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": raw["type"],
        "source": source,
        "account": "000000000000",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": outputs(stack)["Region"],
        "resources": [],
        "detail": {"data": raw["data"]},
    }


def invoke_eventbridge_function(stack: LocalState, event: dict[str, Any]) -> dict[str, Any]:
    answer = aws(stack, "lambda").invoke(
        FunctionName=outputs(stack)["EventBridgeFunctionName"], Payload=json.dumps(event).encode()
    )
    payload = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, payload
    return payload  # type: ignore[no-any-return]


class SseReader(threading.Thread):
    """An SSE subscriber in the background: `opened` once its stream is open, every domain event it
    got in `events`; after `stop`, it reads on to the next heartbeat (so nothing is still on the way)."""

    def __init__(self, stack: LocalState, role: str, types: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.types = sse_url(stack), issue(stack, role, f"{role}-sse-gaps"), types
        self.opened, self.stop, self.done = threading.Event(), threading.Event(), threading.Event()
        self.events: list[dict[str, Any]] = []
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(10, read=TIMEOUT)) as client,
                connect_sse(
                    client, "GET", self.url, params={"token": self.token, "types": self.types}
                ) as source,
            ):
                stopping = False
                for sse in source.iter_sse():
                    if sse.event == "heartbeat":
                        self.opened.set()
                        if stopping:
                            break
                        stopping = self.stop.is_set()
                    elif sse.data and sse.event not in ("end", "truncated"):
                        self.events.append(json.loads(sse.data))
        except BaseException as error:  # reported by the test
            self.failure = error
        finally:
            self.opened.set()
            self.done.set()


@pytest.mark.events
def test_an_event_put_on_the_bus_reaches_a_websocket_and_an_sse_subscriber_exactly_once(stack, settings):
    raw = signal()
    event = eventbridge_event(stack, "signal-model", raw)
    reader = SseReader(stack, "viewer", "signal.created")
    reader.start()
    assert reader.opened.wait(TIMEOUT) and reader.failure is None, reader.failure

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        socket = await open_socket(stack, "viewer")
        await socket.send(action="subscribe", types=["signal.created"], id="s")
        await socket.answer("subscribed", "s")
        first = await asyncio.to_thread(invoke_eventbridge_function, stack, event)
        again = await asyncio.to_thread(invoke_eventbridge_function, stack, event)  # EventBridge retries
        # An invocation returns after its fan-out has posted: all it delivered is before the pong.
        await socket.send(action="ping", id="drain")
        await socket.answer("pong", "drain")
        await socket.ws.close()
        return first, again, socket.events()

    first, again, over_websocket = run(scenario())
    assert (first["id"], first["duplicate"], again["duplicate"]) == (event["id"], False, True)
    assert again["seq"] == first["seq"]
    reader.stop.set()
    assert reader.done.wait(TIMEOUT + 5) and reader.failure is None, reader.failure

    for transport, received in (("websocket", over_websocket), ("sse", reader.events)):
        mine = [e for e in received if e["id"] == event["id"]]
        assert len(mine) == 1, (transport, received)
        [envelope] = mine
        assert (envelope["type"], envelope["seq"], envelope["data"]) == (
            "signal.created",
            first["seq"],
            raw["data"],
        )
        assert envelope["producer"] == "signal-model", transport  # the EventBridge source


def test_an_event_eventbridge_cannot_store_fails_the_invocation_so_it_is_retried(stack):
    event = eventbridge_event(stack, "signal-model", {"type": "order.filled", "data": {}})
    answer = aws(stack, "lambda").invoke(
        FunctionName=outputs(stack)["EventBridgeFunctionName"], Payload=json.dumps(event).encode()
    )
    assert answer["FunctionError"] == "Unhandled"
    assert json.loads(answer["Payload"].read())["errorType"] == "StreamingError"


# -- compression ----------------------------------------------------------------------------------------


@pytest.mark.events
def test_a_large_event_arrives_gzip_flagged_over_websocket_and_sse_alike(stack, settings):
    # docs/events.md: `encoding` on delivered envelopes whose data exceeds compress_above_bytes.
    changes = {f"note_{i}": "x" * 600 for i in range(20)}  # about 12 KB of data, over the 8 KB default
    raw = example("proposal.updated", settings)
    raw["data"] = {**raw["data"], "changes": changes}
    assert len(json.dumps(raw["data"])) > load("dev").compress_above_bytes
    reader = SseReader(stack, "viewer", "proposal.updated")
    reader.start()
    assert reader.opened.wait(TIMEOUT) and reader.failure is None, reader.failure

    async def scenario() -> list[dict[str, Any]]:
        socket = await open_socket(stack, "viewer")
        await socket.send(action="subscribe", types=["proposal.updated"], id="s")
        await socket.answer("subscribed", "s")
        await asyncio.to_thread(local_client(stack).publish, raw)
        await socket.send(action="ping", id="drain")
        await socket.answer("pong", "drain")
        await socket.ws.close()
        return socket.events()

    over_websocket = run(scenario())
    reader.stop.set()
    assert reader.done.wait(TIMEOUT + 5) and reader.failure is None, reader.failure
    for transport, received in (("websocket", over_websocket), ("sse", reader.events)):
        [envelope] = [e for e in received if e["id"] == raw["id"]]
        assert envelope["encoding"] == "gzip", transport
        assert decode_event(envelope)["data"] == raw["data"], transport


# -- internal_error -------------------------------------------------------------------------------------


@pytest.fixture
def failing_stack(tmp_path) -> Iterator[LocalState]:
    """A stack of its own: the test breaks its store."""
    with running_local_stack(tmp_path) as state:
        yield state


@pytest.mark.connections
def test_a_store_failure_is_answered_internal_error_over_websocket_and_sse(failing_stack):
    stack = failing_stack

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        socket = await open_socket(stack, "admin")
        await socket.send(action="ping", id="healthy")
        healthy = await socket.answer("pong", "healthy")
        await asyncio.to_thread(
            aws(stack, "dynamodb").delete_table, TableName=outputs(stack)["EventsTableName"]
        )
        failures = []
        for request_id, message in (
            ("p-1", {"action": "ping"}),
            ("s-1", {"action": "subscribe", "types": ["system.status"]}),
            ("r-1", {"action": "replay", "last": 5, "types": ["system.status"]}),
        ):
            await socket.send(**message, id=request_id)
            failures.append(await socket.answer("never", request_id))
        await socket.send(action="ping", id="p-2")
        still_open = await socket.answer("never", "p-2")
        await socket.ws.close()
        return healthy, failures, still_open

    healthy, failures, still_open = run(scenario())
    assert healthy["type"] == "pong"
    for request_id, failure in zip(("p-1", "s-1", "r-1"), failures, strict=True):
        assert (failure["type"], failure["code"], failure["id"]) == ("error", "internal_error", request_id)
    assert still_open["code"] == "internal_error"  # the connection stays usable

    token = issue(stack, "viewer", "sse-internal")
    answer = httpx.get(sse_url(stack), params={"token": token}, timeout=TIMEOUT)
    assert answer.status_code == 500
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["code"] == "internal_error"
    log = (stack.directory / "stack.log").read_text()
    assert '"message failed"' in log and '"sse failed"' in log  # the cause is in the server's log
    assert token not in log
