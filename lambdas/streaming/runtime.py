"""Builds the services a handler needs, once per execution environment, from the environment."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

from streaming.auth import AuthError, TokenPolicy, TokenVerifier, jwks_keys
from streaming.connections import ConnectionRegistry
from streaming.fanout import Dispatch, FanOut
from streaming.management import ManagementApi
from streaming.publish import Publisher, store_from_settings
from streaming.ratelimit import TokenBucket
from streaming.session import Session
from streaming.settings import AuthSettings, DeliverySettings, Settings
from streaming.store import EventStore

# Connections posted to in parallel by one function; the DynamoDB pool matches, since a 410 removes
# the connection from the posting thread.
FANOUT_WORKERS = 32
SECRET_MAX_AGE_SECONDS = 300  # a rotated signing secret is picked up within this
# Reused across invocations; standard retry mode backs off on throttling.
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=FANOUT_WORKERS,
)


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: EventStore
    publisher: Publisher


@dataclass(frozen=True)
class Delivery:
    settings: DeliverySettings
    registry: ConnectionRegistry
    fanout: FanOut
    session: Session


@cache
def settings() -> Settings:
    return Settings.from_env()


@cache
def services() -> Services:
    store = store_from_settings(settings(), dynamodb())
    return Services(settings(), store, Publisher(settings(), store))


@cache
def delivery() -> Delivery:
    base = services()
    settings = DeliverySettings.from_env()
    session = boto3.session.Session()
    management = ManagementApi(settings.management_url, session.region_name, session.get_credentials())
    registry = ConnectionRegistry(dynamodb(), settings.connections_table, base.settings.roles)
    fanout = FanOut(
        registry,
        management,
        compress_above=settings.compress_above_bytes,
        chunk_connections=settings.fanout_chunk_connections,
        dispatch=_invoker(settings.fanout_function) if settings.fanout_function else None,
        executor=ThreadPoolExecutor(FANOUT_WORKERS, thread_name_prefix="fanout"),
    )
    websocket = Session(
        registry,
        base.store,
        base.settings.roles,
        base.settings.catalog.types,
        management,
        TokenBucket(settings.messages_per_second, settings.burst),
        settings.compress_above_bytes,
    )
    return Delivery(settings, registry, fanout, websocket)


@cache
def verifier() -> tuple[TokenVerifier, AuthSettings]:
    auth = AuthSettings.from_env()
    oidc = auth.mode == "oidc"
    policy = TokenPolicy(
        audience=auth.audience,
        issuer=auth.issuer,
        role_claim=auth.role_claim,
        algorithms=("RS256", "ES256") if oidc else ("HS256",),
    )
    keys = jwks_keys(auth.jwks_url) if oidc else _secret_key(auth.secret_arn)
    # The roles only: the authorizer needs no store, so it builds none on its cold start.
    return TokenVerifier(policy, keys, settings().role_grants), auth


def _secret_key(secret_arn: str) -> Any:
    from aws_lambda_powertools.utilities import parameters

    def key(_header: Any) -> str:
        try:
            return str(parameters.get_secret(secret_arn, max_age=SECRET_MAX_AGE_SECONDS))
        except Exception as error:  # throttled, denied, deleted: refuse (403) and say why in the audit
            raise AuthError(f"signing key unavailable ({type(error).__name__})") from None

    return key


def _invoker(function_name: str) -> Dispatch:
    client = boto3.client("lambda", config=_CLIENT_CONFIG)

    def dispatch(payload: dict[str, Any]) -> None:
        client.invoke(FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload))

    return dispatch


@cache
def dynamodb() -> Any:
    return boto3.client("dynamodb", config=_CLIENT_CONFIG)
