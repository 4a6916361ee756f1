"""Configuration is validated where it is read: cdk.json at synth, the environment at cold start."""

from __future__ import annotations

import copy
import json

import pytest
from pydantic import ValidationError

from stacks.config import ENVIRONMENTS, ROOT, load
from streaming.settings import ConfigurationError, Settings

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
