"""Configuration is validated where it is read: cdk.json at synth, the environment at cold start."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from stacks.config import ENVIRONMENTS, ROOT, SseConfig, load
from stacks.public_layers import powertools_parameter
from streaming import constants as c
from streaming.constants import MAX_FANOUT_CHUNK_CONNECTIONS
from streaming.environment import ConfigurationError
from streaming.settings import AuthSettings, DeliverySettings, Settings, SseSettings

CONTEXT = json.loads((ROOT / "cdk.json").read_text())["context"]["streaming"]


def with_defaults(**overrides):
    context = copy.deepcopy(CONTEXT)
    context["defaults"].update(overrides)
    return context


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_loads_and_is_named_in_its_stack(environment):
    config = load(environment)
    assert config.stack_name == f"Streaming-{environment}"
    assert config.runtime_settings("t").catalog.types == set(config.event_types)


def test_prod_keeps_its_data():
    prod = load("prod")
    assert (prod.retain_data, prod.point_in_time_recovery, prod.deletion_protection) == (True, True, True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"allowed_origins": ["https://app.example.com/path"]}, "scheme://host"),
        ({"allowed_origins": []}, "at least 1"),
        ({"event_types": {"signal.created": "Market Data"}}, "stream names"),
        ({"event_types": {"order.filled": "market"}}, "no schema"),
        ({"roles": {"viewer": ["order.filled"]}}, "unknown event types"),
        ({"log_retention_days": 45}, "log_retention_days"),
        ({"max_event_bytes": 200_000}, "max_event_bytes"),
        ({"alarm_email": "not-an-address"}, "alarm_email"),
        ({"surprise": 1}, "Extra inputs"),
        ({"degradation": {"coalesce_types": ["risk.alert"], "must_deliver_types": []}}, "must always be"),
        (
            {
                "degradation": {
                    "coalesce_types": ["decision.made"],
                    "must_deliver_types": ["decision.made", "risk.alert"],
                }
            },
            "can never be coalesced",
        ),
        ({"degradation": {"coalesce_types": ["order.filled"]}}, "unknown types"),
        ({"degradation": {"coalesce_above_events": 0}}, "coalesce_above_events"),
    ],
)
def test_bad_configuration_is_refused_at_synth(overrides, message):
    with pytest.raises(ValidationError, match=message):
        load("dev", with_defaults(**overrides))


def test_unknown_environment_is_refused():
    with pytest.raises(ValueError, match="unknown environment"):
        load("qa")


def test_runtime_settings_round_trip_through_the_environment(settings):
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda env: env.pop("EVENTS_TABLE_NAME"), "EVENTS_TABLE_NAME"),
        (lambda env: env.update(ROLE_MATRIX="{not json"), "malformed"),
        (lambda env: env.update(REPLAY_WINDOW_SECONDS="ten"), "malformed"),
        (lambda env: env.update(REPLAY_WINDOW_SECONDS="60"), "at least 3600"),
        (lambda env: env.update(ROLE_MATRIX='{"viewer": ["order.filled"]}'), "unknown types"),
        (lambda env: env.update(EVENT_STREAMS='{"signal.created": "Bad Stream"}'), "does not match"),
    ],
)
def test_a_broken_function_environment_fails_at_cold_start(settings, change, message):
    env = settings.to_env()
    change(env)
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def with_auth(**auth):
    return with_defaults(auth={"audience": "streaming", "role_claim": "role", **auth})


def test_hs256_tokens_name_their_environment_as_issuer():
    assert [load(name).auth.issuer for name in ENVIRONMENTS] == [f"streaming-{name}" for name in ENVIRONMENTS]
    settings = load("dev").auth_settings("arn:aws:secretsmanager:eu-west-1:1:secret:key")
    assert (settings.mode, settings.secret_arn, settings.jwks_url) == (
        "hs256",
        "arn:aws:secretsmanager:eu-west-1:1:secret:key",
        "",
    )
    assert settings.allowed_origins == tuple(load("dev").allowed_origins)


def test_oidc_finds_the_jwks_under_the_issuer_unless_told():
    derived = load("dev", with_auth(mode="oidc", issuer="https://idp.example.com/tenant/")).auth
    assert derived.jwks_url == "https://idp.example.com/tenant/.well-known/jwks.json"
    explicit = load(
        "dev", with_auth(mode="oidc", issuer="https://idp.example.com", jwks_url="https://keys.example.com/k")
    )
    settings = explicit.auth_settings("arn:ignored-in-oidc-mode")
    assert (settings.secret_arn, settings.jwks_url) == ("", "https://keys.example.com/k")


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"mode": "oidc"}, "issuer"),
        ({"mode": "oidc", "issuer": "http://idp.example.com"}, "https issuer"),
        ({"mode": "oidc", "issuer": "https://idp.example.com", "jwks_url": "http://k.example.com"}, "https"),
        ({"mode": "hs256", "jwks_url": "https://k.example.com/jwks.json"}, "oidc only"),
        ({"mode": "rs256"}, "mode"),
        ({"mode": "hs256", "algorithm": "HS512"}, "Extra inputs"),
    ],
)
def test_bad_auth_configuration_is_refused_at_synth(auth, message):
    with pytest.raises(ValidationError, match=message):
        load("dev", with_auth(**auth))


def test_hs256_without_a_secret_cannot_make_function_settings():
    with pytest.raises(ConfigurationError, match="AUTH_SECRET_ARN"):
        load("dev").auth_settings("")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"compress_above_bytes": 255}, "compress_above_bytes"),
        ({"fanout_chunk_connections": 9}, "fanout_chunk_connections"),
        # A chunk travels in an asynchronous invocation (256 KB at most); the functions refuse more too.
        ({"fanout_chunk_connections": 2001}, "fanout_chunk_connections"),
    ],
)
def test_bad_delivery_configuration_is_refused_at_synth(overrides, message):
    with pytest.raises(ValidationError, match=message):
        load("dev", with_defaults(**overrides))


def test_the_largest_fanout_chunk_is_accepted_and_the_functions_accept_it_too():
    assert MAX_FANOUT_CHUNK_CONNECTIONS == 2000
    config = load("dev", with_defaults(fanout_chunk_connections=MAX_FANOUT_CHUNK_CONNECTIONS))
    delivery = config.delivery_settings("connections", "https://api.example.com/dev", "")
    assert DeliverySettings.from_env(delivery.to_env()).fanout_chunk_connections == 2000


def test_delivery_defaults_apply_when_cdk_json_leaves_them_out():
    context = copy.deepcopy(CONTEXT)
    for key in ("compress_above_bytes", "fanout_chunk_connections"):
        context["defaults"].pop(key)
    config = load("dev", context)
    assert (config.compress_above_bytes, config.fanout_chunk_connections) == (8192, 250)


def test_delivery_settings_follow_the_rate_limits_and_round_trip():
    config = load("prod")
    delivery = config.delivery_settings("connections", "https://api.example.com/prod", "fanout-worker")
    assert (delivery.messages_per_second, delivery.burst) == (
        config.rate_limits.websocket_messages_per_second,
        config.rate_limits.websocket_burst,
    )
    assert (delivery.fanout_chunk_connections, delivery.compress_above_bytes) == (
        config.fanout_chunk_connections,
        config.compress_above_bytes,
    )
    assert DeliverySettings.from_env(delivery.to_env()) == delivery


@pytest.mark.parametrize(
    "auth",
    [
        None,
        {"mode": "oidc", "issuer": "https://idp.example.com", "audience": "api", "role_claim": "groups"},
    ],
)
def test_auth_settings_round_trip_through_the_environment(auth):
    config = load("staging", with_defaults(auth=auth) if auth else None)
    settings = config.auth_settings("arn:aws:secretsmanager:eu-west-1:1:secret:key")
    assert AuthSettings.from_env(settings.to_env()) == settings


SSE_DEFAULTS = {
    "poll_interval_ms": 500,
    "heartbeat_seconds": 15,
    "max_stream_seconds": 840,
    "timeout_seconds": 900,
    "retry_ms": 1000,
    "reserved_concurrency": None,
    "memory_mb": 256,
    "max_streams_per_subject": 5,
    "push": True,
}


def with_sse(**sse):
    return with_defaults(sse={**SSE_DEFAULTS, **sse})


def test_sse_defaults_in_cdk_json_are_the_models_own():
    assert load("dev").sse.model_dump() == SSE_DEFAULTS == SseConfig().model_dump()
    context = copy.deepcopy(CONTEXT)
    context["defaults"].pop("sse")
    assert load("dev", context).sse == load("dev").sse


def test_prod_caps_how_many_sse_streams_are_open_at_once():
    # Each open stream holds one function invocation: the reservation caps cost and keeps SSE from
    # taking the concurrency the publishers and the WebSocket functions need.
    assert load("prod").sse.reserved_concurrency == 100
    assert load("prod").sse.model_dump() == {**SSE_DEFAULTS, "reserved_concurrency": 100}


def test_a_stream_may_end_exactly_30_seconds_before_the_timeout():
    sse = load("dev", with_sse(max_stream_seconds=570, timeout_seconds=600)).sse
    assert (sse.max_stream_seconds, sse.timeout_seconds) == (570, 600)


@pytest.mark.parametrize(
    ("sse", "message"),
    [
        # The stream must end itself (and send its retry: hint) well before Lambda stops the function.
        ({"max_stream_seconds": 871}, "at least 30 s below timeout_seconds"),
        ({"max_stream_seconds": 900}, "at least 30 s below timeout_seconds"),
        ({"timeout_seconds": 600}, "at least 30 s below timeout_seconds"),
        ({"timeout_seconds": 901}, "timeout_seconds"),  # Lambda's 15-minute limit
        ({"reserved_concurrency": 0}, "reserved_concurrency"),
        ({"poll_interval_ms": 10}, "poll_interval_ms"),
        ({"heartbeat_seconds": 0}, "heartbeat_seconds"),
        ({"retry_ms": -1}, "retry_ms"),
        ({"memory_mb": 64}, "memory_mb"),
        ({"keepalive_seconds": 15}, "Extra inputs"),
    ],
)
def test_bad_sse_configuration_is_refused_at_synth(sse, message):
    with pytest.raises(ValidationError, match=message):
        load("dev", with_sse(**sse))


def test_the_web_adapter_layer_version_is_required():
    context = copy.deepcopy(CONTEXT)
    context["defaults"].pop("web_adapter_layer_version")
    with pytest.raises(ValidationError, match="web_adapter_layer_version"):
        load("dev", context)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_sse_settings_come_from_the_sse_block_and_round_trip(environment):
    config = load(environment)
    settings = config.sse_settings("connections", "wss://api")
    assert settings.streams_table == "connections"
    assert settings.push_url == ("wss://api" if config.sse.push else "")
    assert settings.max_streams_per_subject == config.sse.max_streams_per_subject
    assert (
        settings.poll_interval_ms,
        settings.heartbeat_seconds,
        settings.max_stream_seconds,
        settings.retry_ms,
        settings.compress_above_bytes,
    ) == (
        config.sse.poll_interval_ms,
        config.sse.heartbeat_seconds,
        config.sse.max_stream_seconds,
        config.sse.retry_ms,
        config.compress_above_bytes,  # the top-level key, shared with the WebSocket delivery
    )
    env = settings.to_env()
    assert env[c.ENV_SSE_MAX_STREAM_SECONDS] == "840" and env[c.ENV_COMPRESS_ABOVE_BYTES] == "8192"
    assert SseSettings.from_env(env) == settings


def test_sse_settings_follow_a_changed_configuration():
    sse = {"poll_interval_ms": 250, "heartbeat_seconds": 5, "max_stream_seconds": 300, "retry_ms": 0}
    settings = SseSettings.from_env(load("dev", with_sse(**sse)).sse_settings("t", "wss://api").to_env())
    assert {key: getattr(settings, key) for key in sse} == sse
    assert settings.push_url == "wss://api"
    polling = SseSettings.from_env(load("dev", with_sse(push=False)).sse_settings("t", "wss://api").to_env())
    assert polling.push_url == "" and c.ENV_SSE_PUSH_URL not in polling.to_env()


# `make token` runs this: the configuration is read and a token issued, with no CDK (whose jsii runtime
# starts a Node process) in sight.
MAKE_TOKEN_WITHOUT_THE_CDK = """
import runpy, sys
sys.argv = ["local.token", "--role", "viewer", "--sub", "someone", "--state-dir", sys.argv[1]]
runpy.run_module("local.token", run_name="__main__")
import stacks.config, tools.events_doc
print(sorted(m for m in sys.modules if m.split(".")[0] in ("aws_cdk", "jsii", "constructs")))
"""


def test_reading_the_configuration_and_issuing_a_local_token_never_load_the_cdk(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", MAKE_TOKEN_WITHOUT_THE_CDK, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    token, loaded = run.stdout.splitlines()
    assert token.count(".") == 2  # a JWT
    assert loaded == "[]"
    assert run.stderr == ""  # nor the jsii runtime's banner


@pytest.mark.parametrize("region", ["eu-central-2", "ap-south-2", "me-central-1"])
def test_a_region_without_function_urls_is_refused_naming_it(region):
    with pytest.raises(ValidationError, match=f"region {region} does not offer Lambda Function URLs"):
        load("dev", with_defaults(region=region))


def test_the_deploying_profiles_region_is_checked_too(monkeypatch):
    monkeypatch.setenv("CDK_DEFAULT_REGION", "il-central-1")
    with pytest.raises(ValidationError, match="region il-central-1 does not offer"):
        load("prod")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-west-1")
    assert load("prod").region == "eu-west-1"


@pytest.mark.parametrize(("region", "partition"), [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")])
def test_regions_outside_the_commercial_partition_are_refused(region, partition):
    with pytest.raises(ValidationError, match=f"region {region} is in the {partition} partition"):
        load("dev", with_defaults(region=region))


def test_cdk_targets_the_commercial_partition_only():
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    assert context["@aws-cdk/core:target-partitions"] == ["aws"]


def test_reservations_beyond_the_stated_quota_are_warned_about_with_the_numbers():
    prod = load("prod")
    assert prod.reserved_concurrency == {"publish": 50, "SSE": 100}
    assert prod.concurrency_needed == 250
    assert prod.concurrency_quota_warning() is None  # the default quota, 1000
    context = copy.deepcopy(CONTEXT)
    context["environments"]["prod"]["concurrency_quota"] = 200
    warning = load("prod", context).concurrency_quota_warning()
    assert warning is not None
    for words in ("150 (publish 50, SSE 100)", "at least 250", "concurrency_quota 200"):
        assert words in warning
    assert load("dev").concurrency_needed == 0  # nothing reserved, nothing to fit


def constraint(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.replace("_", "-").lower() == package:
            return version
    raise AssertionError(f"{package} is not pinned in constraints.txt")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_deployed_powertools_is_the_release_the_tests_run_with(environment):
    """The functions' layer is resolved from the public parameter of exactly this release."""
    version = load(environment).powertools_version
    assert version == constraint("aws-lambda-powertools")
    assert powertools_parameter(version) == f"/aws/service/powertools/python/arm64/python3.13/{version}"


def test_a_must_deliver_type_coalesced_is_refused_at_cold_start_too():
    env = load("dev").runtime_settings("t").to_env()
    env[c.ENV_COALESCE_TYPES] = json.dumps(["proposal.updated", "risk.alert"])
    with pytest.raises(ConfigurationError, match="must-deliver and can never be coalesced"):
        Settings.from_env(env)
