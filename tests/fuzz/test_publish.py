"""Any request to the publish API's Function URL, through the deployed handler on moto: bodies from a
nearly valid event to random bytes, any content type, method, path and query. Each is answered with a
success or a documented error at its status, never a 500, and a refused request stores nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers import publish_http
from local.lambda_runtime import LocalContext, function_url_event
from streaming import cursor as cursors
from tests.conftest import TABLE
from tests.fuzz.inputs import assert_refused, documents, fuzzed, json_values

pytestmark = [pytest.mark.fuzz, pytest.mark.usefixtures("handler_environment")]
TYPES = ["signal.created", "risk.alert", "system.status", "decision.made", "order.filled", ""]


def stored(dynamodb) -> int:
    return dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"]


def call(method: str, path: str, body: str | bytes, query: str, content_type: str | None):
    headers = {"host": "abc.lambda-url.eu-central-1.on.aws"}
    if content_type is not None:
        headers["content-type"] = content_type
    event = function_url_event(
        method=method,
        path=path,
        query=query,
        headers=headers,
        body=body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body,
        source_ip="203.0.113.9",
        caller_arn="arn:aws:iam::123456789012:role/fuzzer",
        access_key="AKIAEXAMPLE",
    )
    response = publish_http.handler(event, LocalContext("publish-http"))
    return response["statusCode"], json.loads(response["body"])


def data_like(settings) -> st.SearchStrategy[Any]:
    examples = [settings.catalog.schema(t, 1)["examples"][0] for t in sorted(settings.catalog.types)]
    example_data = st.sampled_from(examples)
    return (
        example_data
        | json_values
        | st.tuples(example_data, st.text(max_size=8), json_values).map(
            lambda parts: {**parts[0], parts[1]: parts[2]}
        )
    )


def events(settings) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "id": st.uuids().map(str) | st.sampled_from(["", "12345", str(uuid.UUID(int=0))]) | json_values,
            "type": st.sampled_from(TYPES) | json_values,
            "data": data_like(settings),
            "schema_version": st.sampled_from([1, 2, 0, -1, "1"]) | json_values,
            "key": st.text(max_size=20) | json_values,
            "producer": json_values,
            "extra": json_values,
        },
    )


def bodies(settings) -> st.SearchStrategy[Any]:
    one = events(settings)
    return (
        one
        | st.lists(one, max_size=4)
        | st.fixed_dictionaries({"events": st.lists(one, max_size=4) | json_values})
    )


@fuzzed(0.4)  # two moto calls an input, three on success
@given(data=st.data())
def test_every_publish_gets_a_documented_answer_and_a_refusal_stores_nothing(
    dynamodb, settings, inputs, data
):
    inputs.tried("publish")
    body = data.draw(documents(bodies(settings)))
    content_type = data.draw(
        st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""])
        | st.none()
        | st.text(max_size=30)
    )
    before = stored(dynamodb)
    status, answer = call("POST", "/events", body, "", content_type)
    assert status != 500, answer
    if status >= 400:
        assert_refused(answer["error"], status)
        assert stored(dynamodb) == before
    else:
        assert status in (200, 201)


queries = st.lists(
    st.tuples(
        st.sampled_from(["cursor", "types", "role", "limit", "count"]) | st.text(max_size=6),
        st.sampled_from(["", "0", "1", "1000", "1001", "-1", "1e3", "viewer", "root", "c1.", "c1.e30"])
        | st.sampled_from(TYPES)
        | st.just(cursors.encode({"market": 1}))
        | st.text(max_size=30),
    ),
    max_size=5,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))


@fuzzed(0.4)  # two moto calls an input, three on success
@given(
    method=st.sampled_from(["GET", "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "BREW"]),
    path=st.sampled_from(["/events", "/events/latest", "/streams", "/stats", "/", "/events/", "/x"])
    | st.text(max_size=20).map(lambda t: "/" + t),
    query=queries,
)
def test_every_read_gets_a_documented_answer_and_changes_nothing(dynamodb, inputs, method, path, query):
    inputs.tried("publish api read")
    before = stored(dynamodb)
    status, answer = call(method, path, "", query, "application/json")
    assert status != 500, answer
    if status >= 400:
        assert_refused(answer["error"], status)
    assert stored(dynamodb) == before
