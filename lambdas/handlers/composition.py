"""The composition root: builds, once per execution environment, what a function uses and nothing
more, from the environment the stack gives it. The domain (streaming/) takes its AWS clients and
executors as parameters; this is the one place that makes them.

Each factory imports the domain modules it builds: every function imports this module, and a
module-level import of the whole domain would load, at every cold start, what only other functions
use (the authorizer has no store, the sweeper no publisher, the probe neither).
`tests/unit/test_cold_import.py` checks that each handler's import leaves out what it does not use.

A new live transport plugs in at `live_deliveries`: the publish paths hand it what they store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from streaming import constants as c

if TYPE_CHECKING:
    from streaming.auth import TokenVerifier
    from streaming.connections import ConnectionRegistry
    from streaming.fanout import Dispatch, FanOut
    from streaming.hs256 import SecretLoader
    from streaming.leases import StreamLeases
    from streaming.management import ManagementApi
    from streaming.probe import Publish
    from streaming.publish import LiveDelivery, Publisher
    from streaming.publish_rate import PublishLimit
    from streaming.results import Appended
    from streaming.session import Session
    from streaming.settings import AuthSettings, DeliverySettings, ProbeSettings, Settings
    from streaming.store import EventStore

# Connections posted to in parallel by one function; the DynamoDB pool matches, since a 410 removes
# the connection from the posting thread.
FANOUT_WORKERS = 32
# A request's id claims made at once (each a conditional write, a round trip), over the DynamoDB pool.
CLAIM_WORKERS = 16
# The signing keys are reread this often (and on a token naming a key not seen yet): a retired key
# verifies for up to this long after `make rotate-key ACTION=retire`, and the probe signs with it.
SECRET_MAX_AGE_SECONDS = 300
# An SSE stream ends before its token expires: this bounds what a probe's stream costs should its close
# go unnoticed behind response streaming, and leaves the probe's run (30 s at most) room to finish.
PROBE_TOKEN_SECONDS = 45
PROBE_PUBLISH_TIMEOUT_SECONDS = 10
# Reused across invocations; standard retry mode backs off on throttling: 4 retries, 5 attempts a call.
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=2,
    read_timeout=5,
    max_pool_connections=FANOUT_WORKERS,
)


@cache
def settings() -> Settings:
    from streaming.settings import Settings

    return Settings.from_env()


@cache
def dynamodb() -> Any:
    from streaming.dynamo import count_throttles

    client = boto3.client("dynamodb", config=_CLIENT_CONFIG)
    client.meta.events.register("response-received.dynamodb", count_throttles)
    return client


@cache
def store() -> EventStore:
    from concurrent.futures import ThreadPoolExecutor

    from streaming.store import EventStore

    config = settings()
    return EventStore(
        dynamodb(),
        config.events_table,
        config.streams_by_type,
        config.replay_window_seconds,
        executor=ThreadPoolExecutor(CLAIM_WORKERS, thread_name_prefix="claims"),
    )


@cache
def publisher() -> Publisher:
    """Also for producers that run in-process, configured by the same environment as the handlers."""
    from streaming.publish import Publisher

    return Publisher(settings(), store(), live_deliveries())


@cache
def publish_limit() -> PublishLimit:
    """Each HTTP publisher's rate (the HTTP publish function's environment sets it)."""
    from streaming.publish_rate import PublishLimit
    from streaming.settings import PublishRateSettings

    return PublishLimit(dynamodb(), settings().events_table, PublishRateSettings.from_env())


def live_deliveries() -> Sequence[LiveDelivery]:
    """Whom a publish hands its stored events: the WebSocket fan-out where this function is wired to
    the WebSocket API (the stack sets its environment)."""
    return (deliver_over_websocket,) if c.ENV_MANAGEMENT_URL in os.environ else ()


def deliver_over_websocket(stored: Sequence[Appended]) -> None:
    fanout().deliver_stored(stored).record()


# -- WebSocket delivery ---------------------------------------------------------------------------


@cache
def delivery_settings() -> DeliverySettings:
    from streaming.settings import DeliverySettings

    return DeliverySettings.from_env()


@cache
def management() -> ManagementApi:
    from streaming.management import ManagementApi

    session = boto3.session.Session()
    return ManagementApi(delivery_settings().management_url, session.region_name, session.get_credentials())


@cache
def registry() -> ConnectionRegistry:
    from streaming.connections import ConnectionRegistry

    config = delivery_settings()
    return ConnectionRegistry(
        dynamodb(),
        config.connections_table,
        settings().roles,
        max_connection_seconds=config.max_connection_seconds,
    )


@cache
def stream_leases() -> StreamLeases:
    """The SSE streams' leases, for counting them (the SSE function takes its own from SseSettings)."""
    from streaming.leases import StreamLeases

    return StreamLeases(dynamodb(), delivery_settings().connections_table)


@cache
def fanout() -> FanOut:
    from concurrent.futures import ThreadPoolExecutor

    from streaming.fanout import FanOut

    config = delivery_settings()
    return FanOut(
        registry(),
        management(),
        compress_above=config.compress_above_bytes,
        chunk_connections=config.fanout_chunk_connections,
        dispatch=_invoker(config.fanout_function) if config.fanout_function else None,
        executor=ThreadPoolExecutor(FANOUT_WORKERS, thread_name_prefix="fanout"),
        coalescing=settings().coalescing,
    )


@cache
def session() -> Session:
    from streaming.ratelimit import TokenBucket
    from streaming.session import Session

    config = delivery_settings()
    return Session(
        registry(),
        store(),
        settings().roles,
        settings().catalog.types,
        management(),
        TokenBucket(config.messages_per_second, config.burst),
        config.compress_above_bytes,
    )


def _invoker(function_name: str) -> Dispatch:
    client = boto3.client("lambda", config=_CLIENT_CONFIG)

    def dispatch(payload: dict[str, Any]) -> None:
        client.invoke(FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload))

    return dispatch


# -- Authentication -------------------------------------------------------------------------------


@cache
def verifier() -> tuple[TokenVerifier, AuthSettings]:
    from streaming.auth import TokenPolicy, TokenVerifier, jwks_keys
    from streaming.hs256 import hs256_keys
    from streaming.settings import AuthSettings

    auth = AuthSettings.from_env()
    oidc = auth.mode == "oidc"
    policy = TokenPolicy(
        audience=auth.audience,
        issuer=auth.issuer,
        role_claim=auth.role_claim,
        algorithms=("RS256", "ES256") if oidc else ("HS256",),
    )
    keys = jwks_keys(auth.jwks_url) if oidc else hs256_keys(_secret_loader(auth.secret_arn))
    # The roles only: the authorizer needs no store, so it builds none on its cold start.
    return TokenVerifier(policy, keys, settings().role_grants), auth


def _secret_loader(secret_arn: str) -> SecretLoader:
    from aws_lambda_powertools.utilities import parameters

    from streaming.auth import KeyUnavailable

    def load(fresh: bool) -> str:
        try:
            return str(parameters.get_secret(secret_arn, max_age=SECRET_MAX_AGE_SECONDS, force_fetch=fresh))
        except Exception as error:  # throttled, denied, deleted: refuse (403) and say why in the audit
            raise KeyUnavailable(f"signing key unavailable ({type(error).__name__})") from None

    return load


# -- Synthetic probe ------------------------------------------------------------------------------


@cache
def probe_settings() -> ProbeSettings:
    from streaming.settings import ProbeSettings

    return ProbeSettings.from_env()


def probe_token() -> str:
    """A short-lived token for the probe's role, signed with the environment's current HS256 key."""
    from streaming.hs256 import SigningKeys, issue_token
    from streaming.settings import AuthSettings

    auth = AuthSettings.from_env()
    return issue_token(
        SigningKeys.parse(_secret_loader(auth.secret_arn)(False)),
        audience=auth.audience,
        issuer=auth.issuer,
        role_claim=auth.role_claim,
        subject=c.PROBE_COMPONENT,
        role=probe_settings().role,
        ttl_seconds=PROBE_TOKEN_SECONDS,
    )


@cache
def probe_publisher() -> Publish:
    """POST /events to the publish Function URL, signed with SigV4 (service lambda) as this function's
    role; raises unless the event was accepted."""
    import urllib.request
    from urllib.parse import urljoin

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    from streaming.environment import ConfigurationError

    url = urljoin(probe_settings().publish_url, "events")
    if not url.startswith(("https://", "http://")):  # urlopen would open file: and other schemes too
        raise ConfigurationError(f"{c.ENV_PROBE_PUBLISH_URL} must be an http(s) URL")
    session = boto3.session.Session()
    credentials, region = session.get_credentials(), session.region_name

    def publish(event: Mapping[str, Any]) -> None:
        body = json.dumps(event).encode()
        signed = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
        SigV4Auth(credentials.get_frozen_credentials(), "lambda", region).add_auth(signed)
        # http(s) only (checked above). A refusal raises HTTPError (4xx, 5xx).
        request = urllib.request.Request(url, body, dict(signed.headers.items()), method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=PROBE_PUBLISH_TIMEOUT_SECONDS) as response:  # noqa: S310
            response.read()

    return publish
