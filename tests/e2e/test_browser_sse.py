"""SSE from a real browser on an allowed origin (another port than the SSE endpoint), as docs/protocol.md
tells pages to use it: native EventSource with `?token=`, fetch streaming with `Authorization`, refusals
the page can read; and a disallowed origin, which reads nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.publish import local_client
from local.state import LocalState
from local.token import issue
from tests.conftest import signal
from tests.e2e.conftest import wait_for
from tests.integration.conftest import outputs, running_local_stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("local-stack")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origins) -> Iterator[LocalState]:
    allowed, _ = origins
    with running_local_stack(
        tmp_path_factory.mktemp("e2e"),
        "--allow-origin",
        allowed,
        "--sse-max-stream-seconds",
        "5",
        "--sse-heartbeat-seconds",
        "2",
    ) as state:
        yield state


@pytest.fixture
def page_at(browser) -> Iterator[Callable[[str], Any]]:
    pages = []

    def open_page(origin: str) -> Any:
        page = browser.new_page()
        page.goto(origin + "/")
        pages.append(page)
        return page

    yield open_page
    for page in pages:
        page.close()


def test_eventsource_with_a_token_receives_reconnects_after_the_planned_end_and_loses_nothing(
    stack, origins, page_at
):
    page = page_at(origins[0])
    events_url = (
        outputs(stack)["SseUrl"] + "events?types=signal.created&token=" + issue(stack, "viewer", "es")
    )
    page.evaluate(
        """url => {
            window.got = []; window.ends = 0; window.opens = 0;
            const source = new EventSource(url);
            source.onopen = () => { window.opens += 1; };
            source.addEventListener("signal.created", e => {
                window.got.push({id: e.lastEventId, event: JSON.parse(e.data)});
            });
            source.addEventListener("end", () => { window.ends += 1; });
        }""",
        events_url,
    )
    wait_for(lambda: page.evaluate("window.opens") >= 1, "the stream to open")
    before = [signal() for _ in range(3)]
    local_client(stack).publish(before)
    wait_for(lambda: len(page.evaluate("window.got")) >= 3, "the first events")
    wait_for(lambda: page.evaluate("window.ends") >= 1, "the planned end")
    during = [signal() for _ in range(2)]  # in the gap before EventSource reconnects by itself
    local_client(stack).publish(during)
    wait_for(lambda: page.evaluate("window.opens") >= 2, "EventSource to reconnect")
    got = wait_for(
        lambda: (got := page.evaluate("window.got")) and len(got) >= 5 and got, "the events from the gap"
    )
    time.sleep(0.5)  # nothing more may come: no repeat after the reconnect
    got = page.evaluate("window.got")
    assert [g["event"]["id"] for g in got] == [e["id"] for e in before + during]
    seqs = [g["event"]["seq"] for g in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_fetch_streaming_with_an_authorization_header_works_after_its_preflight(stack, origins, page_at):
    page = page_at(origins[0])
    result = page.evaluate(
        """async ([url, token]) => {
            const response = await fetch(url, {headers: {Authorization: "Bearer " + token}});
            const reader = response.body.getReader();
            const decoder = new TextDecoder();
            let text = "";
            while (!text.includes("event: heartbeat")) {
                const {value, done} = await reader.read();
                if (done) break;
                text += decoder.decode(value, {stream: true});
            }
            await reader.cancel();
            return {status: response.status, type: response.headers.get("content-type"), text};
        }""",
        [outputs(stack)["SseUrl"] + "events", issue(stack, "analyst", "fetch")],
    )
    assert result["status"] == 200 and result["type"].startswith("text/event-stream")
    assert "event: heartbeat" in result["text"]


def test_a_refusal_is_json_the_page_can_read(stack, origins, page_at):
    page = page_at(origins[0])
    result = page.evaluate(
        """async url => {
            const response = await fetch(url, {headers: {Authorization: "Bearer not-a-token"}});
            return {status: response.status, body: await response.json()};
        }""",
        outputs(stack)["SseUrl"] + "events",
    )
    assert result["status"] == 401 and result["body"]["error"]["code"] == "invalid_token"


def test_a_disallowed_origin_reads_nothing(stack, origins, page_at):
    page = page_at(origins[1])
    url = outputs(stack)["SseUrl"] + "events"
    token = issue(stack, "viewer", "stranger")
    fetched = page.evaluate(
        """async ([url, token]) => {
            try { await fetch(url, {headers: {Authorization: "Bearer " + token}}); return "read"; }
            catch (error) { return error.name; }
        }""",
        [url, token],
    )
    assert fetched == "TypeError"  # blocked by CORS: the page learns nothing, not even the status
    page.evaluate(
        """url => {
            window.state = null;
            const source = new EventSource(url);
            source.onerror = () => { window.state = source.readyState; };
        }""",
        f"{url}?token={token}",
    )
    assert (
        wait_for(lambda: page.evaluate("window.state") is not None, "EventSource to fail")
        and json.dumps(page.evaluate("window.state")) == "2"
    )  # CLOSED: EventSource does not retry a response it may not read
