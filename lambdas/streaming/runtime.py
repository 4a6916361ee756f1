"""Builds the services a handler needs, once per execution environment, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import boto3
from botocore.config import Config

from streaming.publish import Publisher, store_from_settings
from streaming.settings import Settings
from streaming.store import EventStore

# Reused across invocations; standard retry mode backs off on throttling.
_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=2, read_timeout=5)


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: EventStore
    publisher: Publisher


@cache
def services() -> Services:
    settings = Settings.from_env()
    store = store_from_settings(settings, boto3.client("dynamodb", config=_CLIENT_CONFIG))
    return Services(settings, store, Publisher(settings, store))
