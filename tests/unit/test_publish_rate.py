"""Each HTTP publisher's rate (streaming/publish_rate.py) on moto: events, not requests, are counted;
a refused request writes nothing and says when to retry; every execution environment spends the same
bucket."""

from __future__ import annotations

import copy
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stacks.config import ROOT, load
from streaming.environment import ConfigurationError
from streaming.errors import RateLimited, StreamingError
from streaming.publish_rate import PublishLimit, bucket_key, principal_of
from streaming.settings import PublishRateSettings
from tests.conftest import TABLE, Clock

pytestmark = pytest.mark.degradation
RISK_ENGINE = "arn:aws:iam::123456789012:role/risk-engine"
FEED = "arn:aws:iam::123456789012:user/market-feed"


def limit(dynamodb: Any, clock: Clock, rate: float = 10, burst: int = 20, **overrides: Any) -> PublishLimit:
    return PublishLimit(
        dynamodb, TABLE, PublishRateSettings(rate=rate, burst=burst, overrides=overrides), clock
    )


def refusal(limiter: PublishLimit, caller: str, events: int) -> RateLimited:
    with pytest.raises(RateLimited) as refused:
        limiter.admit(caller, events)
    return refused.value


def bucket(dynamodb: Any, principal: str) -> dict[str, Any]:
    key = {"pk": {"S": bucket_key(principal)}, "sk": {"N": "0"}}
    return dynamodb.get_item(TableName=TABLE, Key=key, ConsistentRead=True)["Item"]


def test_an_assumed_roles_sessions_share_their_roles_bucket_and_users_keep_their_own():
    session = "arn:aws:sts::123456789012:assumed-role/risk-engine/i-0abc123"
    assert principal_of(session) == RISK_ENGINE
    assert principal_of("arn:aws:sts::123456789012:assumed-role/risk-engine/other-session") == RISK_ENGINE
    assert principal_of(FEED) == FEED


def test_events_are_counted_not_requests(dynamodb, clock):
    limiter = limit(dynamodb, clock, rate=10, burst=20)
    limiter.admit(RISK_ENGINE, 15)
    limiter.admit(RISK_ENGINE, 5)  # the burst is spent by 2 requests
    refused = refusal(limiter, RISK_ENGINE, 1)
    assert (refused.error.code, refused.status) == ("rate_limited", 429)
    assert refused.headers == {"Retry-After": "1"}  # one event at 10/s: 100 ms, in whole seconds


def test_retry_after_is_when_the_whole_request_fits_and_then_it_does(dynamodb, clock):
    limiter = limit(dynamodb, clock, rate=2, burst=10)
    limiter.admit(RISK_ENGINE, 10)
    refused = refusal(limiter, RISK_ENGINE, 7)  # 7 events at 2/s: 3.5 s
    assert refused.retry_after == 4
    clock.advance(refused.retry_after - 1)
    refusal(limiter, RISK_ENGINE, 7)  # a second early: still refused
    clock.advance(1)
    limiter.admit(RISK_ENGINE, 7)


def test_a_refused_request_writes_nothing(dynamodb, clock):
    limiter = limit(dynamodb, clock, rate=1, burst=5)
    limiter.admit(RISK_ENGINE, 5)
    before = bucket(dynamodb, RISK_ENGINE)
    for events in (1, 3, 5):
        refusal(limiter, RISK_ENGINE, events)
    assert bucket(dynamodb, RISK_ENGINE) == before


def test_publishers_have_buckets_of_their_own_and_named_ones_their_own_rate(dynamodb, clock):
    limiter = limit(dynamodb, clock, rate=1, burst=5, **{FEED: (100.0, 200)})
    limiter.admit(RISK_ENGINE, 5)
    refusal(limiter, RISK_ENGINE, 1)
    limiter.admit(FEED, 200)  # the override's burst, untouched by the other publisher
    assert refusal(limiter, FEED, 100).retry_after == 1  # 100 events at 100/s


def test_a_batch_beyond_the_burst_can_never_fit_and_is_refused_as_too_large(dynamodb, clock):
    with pytest.raises(StreamingError) as refused:
        limit(dynamodb, clock, rate=10, burst=20).admit(RISK_ENGINE, 21)
    assert (refused.value.error.code, refused.value.status) == ("batch_too_large", 413)


def test_an_admitted_request_costs_one_write_whatever_its_size_and_a_refused_one_no_write(dynamodb, clock):
    """What the limit adds to a publish in DynamoDB requests (docs/publishing.md, "Rate limit")."""
    calls: list[str] = []
    dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    limiter = limit(dynamodb, clock, rate=100, burst=200)
    for events in (1, 100, 99):
        limiter.admit(RISK_ENGINE, events)
    assert calls == ["UpdateItem"] * 3
    calls.clear()
    refusal(limiter, RISK_ENGINE, 1)  # spent, as this environment knew: confirmed by one read
    assert calls == ["GetItem"]
    other = limit(dynamodb, clock, rate=100, burst=200)  # another environment, which knew nothing
    calls.clear()
    refusal(other, RISK_ENGINE, 1)
    assert calls == ["UpdateItem"]  # its write was refused, and told it how spent the bucket is


def test_every_execution_environment_spends_the_same_bucket(dynamodb, clock):
    """Two limiters are two environments of the publish function: each learns the other's spending
    from the refused write, and neither admits beyond the bucket."""
    first, second = limit(dynamodb, clock, rate=10, burst=20), limit(dynamodb, clock, rate=10, burst=20)
    first.admit(RISK_ENGINE, 5)
    second.admit(RISK_ENGINE, 10)  # second believed the bucket full; its write found 5 spent
    first.admit(RISK_ENGINE, 5)  # first believed 5 spent; its write found 15
    assert refusal(second, RISK_ENGINE, 1).retry_after == 1
    assert refusal(first, RISK_ENGINE, 1).retry_after == 1
    clock.advance(2)  # refilled: 20 events at 10/s
    second.admit(RISK_ENGINE, 20)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(
        st.tuples(st.integers(1, 8), st.sampled_from([0.0, 0.05, 0.3, 1.0]), st.integers(0, 1)),
        min_size=1,
        max_size=30,
    )
)
def test_no_schedule_of_requests_gets_more_than_the_burst_plus_the_rate(dynamodb, requests):
    """Whatever the sizes and pauses, and across two environments: admitted events never exceed
    burst + rate x elapsed; a refused request is admitted once its Retry-After has passed."""
    rate, burst = 4.0, 8
    caller = f"arn:aws:iam::123456789012:user/{uuid.uuid4()}"  # a bucket of its own per example
    clock = Clock()
    start = clock.now
    environments = [limit(dynamodb, clock, rate, burst), limit(dynamodb, clock, rate, burst)]
    admitted = 0
    for events, pause, environment in requests:
        clock.advance(pause)
        limiter = environments[environment]
        try:
            limiter.admit(caller, events)
        except RateLimited as refused:
            clock.advance(refused.retry_after)
            limiter.admit(caller, events)
        admitted += events
        assert admitted <= burst + math.ceil(rate * (clock.now - start))


ROLE = "arn:aws:iam::123456789012:role/market-feed"


def with_publish_rate(**rate: Any) -> dict[str, Any]:
    context = copy.deepcopy(json.loads((ROOT / "cdk.json").read_text())["context"]["streaming"])
    context["defaults"]["publish_rate"] = {"events_per_second": 100, "burst": 200, **rate}
    return context


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        ({"burst": 99}, "hold a whole batch"),  # max_batch_events is 100: such a batch could never fit
        ({"principals": {ROLE: {"events_per_second": 5, "burst": 10}}}, "hold a whole batch"),
        ({"events_per_second": 0}, "greater than 0"),
        ({"principals": {"market-feed": {"events_per_second": 5, "burst": 100}}}, "IAM user or role ARNs"),
        (
            {
                "principals": {
                    "arn:aws:sts::123456789012:assumed-role/x/s": {"events_per_second": 5, "burst": 100}
                }
            },
            "IAM user or role ARNs",
        ),
        ({"per_type": {}}, "Extra inputs"),
    ],
)
def test_bad_publish_rates_are_refused_at_synth(rate, message):
    with pytest.raises(ValidationError, match=message):
        load("dev", with_publish_rate(**rate))


def test_publish_rates_reach_the_function_and_round_trip_through_its_environment():
    config = load("dev", with_publish_rate(principals={ROLE: {"events_per_second": 500, "burst": 1000}}))
    rates = config.publish_rate_settings()
    assert PublishRateSettings.from_env(rates.to_env()) == rates
    assert (rates.of(ROLE), rates.of(RISK_ENGINE)) == ((500.0, 1000), (100.0, 200))
    assert PublishRateSettings.from_env({"PUBLISH_RATE": "2.5", "PUBLISH_BURST": "5"}).of(ROLE) == (2.5, 5)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"PUBLISH_RATE": "0", "PUBLISH_BURST": "5"}, "PUBLISH_RATE must be more than 0"),
        ({"PUBLISH_RATE": "1"}, "PUBLISH_BURST"),
        ({"PUBLISH_RATE": "1", "PUBLISH_BURST": "5", "PUBLISH_RATE_OVERRIDES": '{"a": [0, 5]}'}, "above 0"),
    ],
)
def test_a_broken_publish_rate_environment_fails_at_cold_start(environment, message):
    with pytest.raises(ConfigurationError, match=message):
        PublishRateSettings.from_env(environment)
