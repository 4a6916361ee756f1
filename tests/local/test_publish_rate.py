"""The publish handler (handlers.publish_http) refusing a publisher beyond its rate: 429 `rate_limited`
with Retry-After, the whole request, before anything is claimed or stored; on moto."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handlers import publish_http
from local.lambda_runtime import LocalContext, function_url_event
from streaming import constants as c
from streaming.publish_rate import PublishLimit
from streaming.settings import PublishRateSettings
from tests.conftest import TABLE, signal

pytestmark = [pytest.mark.degradation, pytest.mark.usefixtures("handler_environment")]
RISK_ENGINE = "arn:aws:sts::123456789012:assumed-role/risk-engine/task-1"


def post(events: list[dict[str, Any]], caller: str = RISK_ENGINE) -> tuple[int, dict[str, str], Any]:
    event = function_url_event(
        method="POST",
        path="/events",
        query="",
        headers={"content-type": "application/json", "host": "abc.lambda-url.eu-central-1.on.aws"},
        body=json.dumps({"events": events}).encode(),
        source_ip="203.0.113.9",
        caller_arn=caller,
        access_key="ASIAEXAMPLE",
    )
    response = publish_http.handler(event, LocalContext("publish-http"))
    return response["statusCode"], response.get("headers") or {}, json.loads(response["body"])


def table_items(dynamodb: Any) -> list[dict[str, Any]]:
    items = dynamodb.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["N"]))


@pytest.fixture
def slow_refill(monkeypatch):
    """Three events at once, then one every 1,000 s: nothing refills while a test runs."""
    monkeypatch.setenv(c.ENV_PUBLISH_RATE, "0.001")
    monkeypatch.setenv(c.ENV_PUBLISH_BURST, "3")


def test_a_publisher_beyond_its_rate_gets_429_with_retry_after_and_nothing_is_stored(
    dynamodb, slow_refill, capsys
):
    assert post([signal(), signal(), signal()])[0] == 201
    before = table_items(dynamodb)

    status, headers, body = post([signal(), signal()])

    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert 1990 <= int(headers["Retry-After"]) <= 2000  # 2 events at 0.001/s, less the ms since
    assert table_items(dynamodb) == before  # no claim, no event, no head moved, bucket untouched
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(line.get("PublishesRateLimited") == [1.0] for line in emitted)
    assert any(line.get("EventsRateLimited") == [2.0] for line in emitted)


def test_invalid_events_are_refused_for_what_they_are_and_spend_nothing(dynamodb, slow_refill):
    assert post([signal(), signal(data={"instrument": 1})])[2]["error"]["code"] == "schema_violation"
    status, _, body = post([signal() for _ in range(4)])
    assert (status, body["error"]["code"]) == (413, "batch_too_large")  # beyond the burst: never fits
    assert post([signal(), signal(), signal()])[0] == 201  # the whole burst was still there


def test_sessions_of_one_role_share_its_rate_and_other_publishers_keep_theirs(dynamodb, slow_refill):
    assert post([signal(), signal(), signal()])[0] == 201
    other_session = "arn:aws:sts::123456789012:assumed-role/risk-engine/task-2"
    assert post([signal()], caller=other_session)[0] == 429
    assert post([signal()], caller="arn:aws:iam::123456789012:user/market-feed")[0] == 201


def test_a_producer_that_honours_retry_after_stores_each_event_exactly_once(dynamodb, clock, monkeypatch):
    limit = PublishLimit(dynamodb, TABLE, PublishRateSettings(rate=1, burst=3), clock)
    monkeypatch.setattr(publish_http, "publish_limit", lambda: limit)
    first, second = [signal(), signal(), signal()], [signal(), signal(), signal()]
    assert post(first)[0] == 201

    status, headers, _ = post(second)
    assert status == 429
    clock.advance(int(headers["Retry-After"]))
    status, _, body = post(second)  # the same ids, once Retry-After has passed

    assert status == 201
    assert [event["seq"] for event in body["events"]] == [4, 5, 6]
    clock.advance(3)
    status, _, again = post(second)  # its answer lost, the producer sends it once more
    assert (status, [event["duplicate"] for event in again["events"]]) == (200, [True, True, True])
    read = function_url_event(
        method="GET",
        path="/events",
        query="limit=100",
        headers={"host": "abc.lambda-url.eu-central-1.on.aws"},
        body=b"",
        source_ip="203.0.113.9",
        caller_arn=RISK_ENGINE,
        access_key="ASIAEXAMPLE",
    )
    page = json.loads(publish_http.handler(read, LocalContext("publish-http"))["body"])
    assert [event["id"] for event in page["events"]] == [event["id"] for event in first + second]


def test_the_limit_adds_one_request_to_a_publish_whatever_its_size(dynamodb, capsys):
    """What the rate limit costs a publish, in DynamoDB requests, beside what the store costs."""
    from handlers import composition

    calls: list[tuple[str, str]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:  # the call's own parameters
        calls.append((model.name, params.get("Key", {}).get("pk", {}).get("S", "")))

    composition.dynamodb().meta.events.register("before-parameter-build.dynamodb", record)
    figures = []
    for size in (1, 10, 100):
        calls.clear()
        assert post([signal() for _ in range(size)])[0] == 201
        limits = [call for call in calls if call[1].startswith("publisher#")]
        assert limits == [("UpdateItem", "publisher#arn:aws:iam::123456789012:role/risk-engine")]
        figures.append(f"{size}: {len(calls)} ({len(calls) / size:.2f} per event)")
    with capsys.disabled():
        print("\npublish rate: DynamoDB requests per publish of n events, the limit's 1 included:", *figures)
