"""Typed per-environment configuration, read from the "streaming" context in cdk.json.

Each environment is the "defaults" block overlaid with its own block; `-c streaming.<env>.<key>=...`
is not supported on purpose: change cdk.json so the configuration is reviewed like code.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Interval
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streaming.constants import ALWAYS_MUST_DELIVER, PROBE_EVENT_TYPE, STREAM_NAME_PATTERN
from streaming.environment import limits
from streaming.events import EventCatalog
from streaming.settings import (
    AuthMode,
    AuthSettings,
    DeliverySettings,
    ProbeSettings,
    PublishRateSettings,
    Settings,
    SseSettings,
    coalescing_problems,
)

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("dev", "staging", "prod")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
_PRINCIPAL = re.compile(r"^arn:aws:iam::\d{12}:(user|role)/[\w+=,.@-]+$")
_HTTPS_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?$")
# An SSE stream ends itself at least this long before its function's timeout.
SSE_TIMEOUT_MARGIN_SECONDS = 30
# What a browser may send to the SSE endpoint: the token, the resume position EventSource sends by
# itself, and the two headers fetch() streaming clients commonly set. Nothing is exposed beyond the
# CORS-safelisted response headers.
SSE_CORS_ALLOWED_HEADERS = ("Authorization", "Last-Event-ID", "Content-Type", "Cache-Control")
SSE_CORS_MAX_AGE_SECONDS = 600  # how long a browser may reuse a preflight's answer
# Lambda refuses a reserved concurrency that would leave the account fewer unreserved executions.
MIN_UNRESERVED_CONCURRENCY = 100
# The concurrent executions quota of an established account (new accounts start lower).
DEFAULT_CONCURRENCY_QUOTA = 1000
# The publish API and SSE are Function URLs, SSE streams over them: regions without Function URLs
# cannot run these stacks. "Function URLs are not supported in the following AWS Regions", from
# https://docs.aws.amazon.com/lambda/latest/dg/urls-configuration.html (eleven regions at the time).
REGIONS_WITHOUT_FUNCTION_URLS = frozenset(
    {
        "ap-south-2",  # Asia Pacific (Hyderabad)
        "ap-southeast-4",  # Asia Pacific (Melbourne)
        "ap-southeast-5",  # Asia Pacific (Malaysia)
        "ap-southeast-6",  # Asia Pacific (New Zealand)
        "ap-southeast-7",  # Asia Pacific (Thailand)
        "ap-east-2",  # Asia Pacific (Taipei)
        "ca-west-1",  # Canada West (Calgary)
        "eu-south-2",  # Europe (Spain)
        "eu-central-2",  # Europe (Zurich)
        "il-central-1",  # Israel (Tel Aviv)
        "me-central-1",  # Middle East (UAE)
    }
)
# The partition a region belongs to, by its name's prefix; every other region is in `aws`.
_PARTITION_PREFIXES = (
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-isob-", "aws-iso-b"),
    ("us-isof-", "aws-iso-f"),
    ("us-iso-", "aws-iso"),
    ("eu-isoe-", "aws-iso-e"),
)
SUPPORTED_PARTITION = "aws"


def partition_of(region: str) -> str:
    return next((partition for prefix, partition in _PARTITION_PREFIXES if region.startswith(prefix)), "aws")


def region_problem(region: str) -> str | None:
    """Why these stacks cannot be deployed to `region`, if they cannot (synth and preflight both ask)."""
    partition = partition_of(region)
    if partition != SUPPORTED_PARTITION:
        return (
            f"region {region} is in the {partition} partition; these stacks deploy to the "
            f"{SUPPORTED_PARTITION} partition only (the public Powertools and Lambda Web Adapter layers "
            "they run with are published there)"
        )
    if region in REGIONS_WITHOUT_FUNCTION_URLS:
        return (
            f"region {region} does not offer Lambda Function URLs, which the publish API and the SSE "
            "stream (response streaming) are; choose another region"
        )
    return None


def within(group: type, field_name: str, *, unit: int = 1) -> Interval:
    """The bounds a runtime settings field declares, checked here at synth as well as at cold start."""
    return Interval(**limits(group, field_name, unit=unit))


@dataclass(frozen=True)
class Cors:
    """What the SSE Function URL answers browsers with (CORS), in front of the app: the one definition
    the construct deploys and the local stack serves."""

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...]
    max_age_seconds: int


class RateLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    websocket_messages_per_second: Annotated[int, within(DeliverySettings, "messages_per_second")]
    websocket_burst: Annotated[int, within(DeliverySettings, "burst")]
    api_rate_per_second: int = Field(gt=0)
    api_burst: int = Field(gt=0)


class PublisherRate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    events_per_second: Annotated[float, within(PublishRateSettings, "rate")]
    burst: Annotated[int, within(PublishRateSettings, "burst")]


class PublishRate(PublisherRate):
    """Each HTTP publisher's rate (docs/publishing.md, "Rate limit"): events per second and burst, for
    every IAM principal but those `principals` names (user or role ARNs) with rates of their own."""

    principals: dict[str, PublisherRate] = Field(default_factory=dict)

    @field_validator("principals")
    @classmethod
    def _principals_are_arns(cls, principals: dict[str, PublisherRate]) -> dict[str, PublisherRate]:
        bad = [name for name in principals if not _PRINCIPAL.match(name)]
        if bad:
            raise ValueError(
                f"principals are IAM user or role ARNs (arn:aws:iam::<account>:role/<name>): {bad}"
            )
        return principals

    def bursts(self) -> dict[str, int]:
        return {"default": self.burst, **{name: rate.burst for name, rate in self.principals.items()}}


class AlarmThresholds(BaseModel):
    """When the stack's alarms fire (docs/operations.md). The service levels: delivery success and
    end-to-end latency, measured by the functions and by the synthetic probe; the rest are signs of
    trouble before those move."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    delivery_success_percent: float = Field(default=99.9, gt=0, le=100)
    delivery_latency_p99_ms: int = Field(default=100, gt=0)
    probe_success_percent: float = Field(
        default=99, gt=0, le=100, description="connection stability: the probe's checks that succeed"
    )
    auth_failures_per_5_minutes: int = Field(default=100, gt=0)


class AuthConfig(BaseModel):
    """How connecting clients' tokens are verified: "hs256" with a key the stack generates, or "oidc"
    with an identity provider's JWKS."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: AuthMode
    audience: str = Field(min_length=1)
    role_claim: str = Field(min_length=1)
    issuer: str = Field(min_length=1, description="hs256: defaults to streaming-<environment>")
    jwks_url: str | None = Field(default=None, description="oidc: defaults to the issuer's well-known JWKS")

    @model_validator(mode="before")
    @classmethod
    def _oidc_jwks_defaults_to_the_issuers(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") == "oidc" and isinstance(data.get("issuer"), str):
            return {"jwks_url": data["issuer"].rstrip("/") + "/.well-known/jwks.json", **data}
        return data

    @model_validator(mode="after")
    def _mode_fits_its_keys(self) -> AuthConfig:
        if self.mode == "oidc":
            bad = [url for url in (self.issuer, self.jwks_url) if url is None or not _HTTPS_URL.match(url)]
            if bad:
                raise ValueError(f"oidc needs an https issuer and JWKS URL: {bad}")
        elif self.jwks_url is not None:
            raise ValueError("jwks_url is for oidc only; hs256 verifies with the stack's generated key")
        return self


class SseConfig(BaseModel):
    """SSE over Lambda response streaming: one function invocation per open stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    poll_interval_ms: Annotated[int, within(SseSettings, "poll_interval_ms")] = Field(
        default=500, description="how often a stream reads the store"
    )
    heartbeat_seconds: Annotated[int, within(SseSettings, "heartbeat_seconds")] = 15
    max_stream_seconds: Annotated[int, within(SseSettings, "max_stream_seconds")] = Field(
        default=840, description="a stream ends itself (retry: hint) this long after it opened"
    )
    timeout_seconds: int = Field(default=900, ge=35, le=900, description="the function's; Lambda allows 900")
    retry_ms: Annotated[int, within(SseSettings, "retry_ms")] = Field(
        default=1000, description="the retry: hint a stream ends with"
    )
    reserved_concurrency: int | None = Field(
        default=None, ge=1, description="most streams open at once (each holds one function): caps cost"
    )
    memory_mb: int = Field(default=256, ge=128, le=10_240)
    max_streams_per_subject: Annotated[int, within(SseSettings, "max_streams_per_subject")] = Field(
        default=5, description="open streams one token subject may hold at once"
    )
    push: bool = Field(
        default=True,
        description="streams relay the events the WebSocket API pushes to a connection of their own; "
        "they poll the store (every poll_interval_ms) when this is off or the connection fails",
    )

    @model_validator(mode="after")
    def _stream_ends_before_the_function_does(self) -> SseConfig:
        """A stream must end itself, flush and say retry: before Lambda cuts the invocation off."""
        if self.max_stream_seconds > self.timeout_seconds - SSE_TIMEOUT_MARGIN_SECONDS:
            raise ValueError(
                f"max_stream_seconds ({self.max_stream_seconds}) must be at least "
                f"{SSE_TIMEOUT_MARGIN_SECONDS} s below timeout_seconds ({self.timeout_seconds})"
            )
        return self


class DegradationConfig(BaseModel):
    """Graceful degradation (docs/reliability.md): a subscriber with more than `coalesce_above_events`
    events pending for one delivery gets superseded events of `coalesce_types` coalesced by key.
    Must-deliver types (risk.alert always) are never coalesced."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    coalesce_types: list[str] = Field(default_factory=lambda: ["proposal.updated", "system.status"])
    must_deliver_types: list[str] = Field(default_factory=lambda: sorted(ALWAYS_MUST_DELIVER))
    coalesce_above_events: Annotated[int, within(Settings, "coalesce_above_events")] = Field(
        default=100, description="more than one full publish batch: a fast subscriber never sees it"
    )


class EnvironmentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    account: str | None = None
    region: str | None = None
    replay_window_hours: Annotated[int, within(Settings, "replay_window_seconds", unit=3600)]
    retain_data: bool
    point_in_time_recovery: bool
    deletion_protection: bool
    allowed_origins: list[str] = Field(min_length=1)
    rate_limits: RateLimits
    publish_rate: PublishRate
    auth: AuthConfig
    event_types: dict[str, str] = Field(min_length=1, description="event type -> stream")
    roles: dict[str, list[str]] = Field(min_length=1, description="role -> event types it may see")
    max_event_bytes: Annotated[int, within(Settings, "max_event_bytes")] = Field(
        description="API Gateway WebSocket messages are <= 128 KB"
    )
    max_batch_events: Annotated[int, within(Settings, "max_batch_events")]
    compress_above_bytes: Annotated[int, within(DeliverySettings, "compress_above_bytes")] = Field(
        default=8192, description="larger event data is sent gzipped"
    )
    # at most what fits one asynchronous invocation (256 KB)
    fanout_chunk_connections: Annotated[int, within(DeliverySettings, "fanout_chunk_connections")] = Field(
        default=250, description="audiences up to this size are delivered inline"
    )
    publish_reserved_concurrency: int | None = Field(default=None, ge=1)
    concurrency_quota: int = Field(
        default=DEFAULT_CONCURRENCY_QUOTA,
        ge=1,
        description="the account's concurrent executions quota the reservations must fit in; synth warns "
        "beyond it, `make preflight` checks the account's real one",
    )
    alarm_email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    alarms: AlarmThresholds = AlarmThresholds()
    log_retention_days: Literal[1, 3, 7, 14, 30, 90, 180, 365, 731, 1827]
    powertools_version: str = Field(
        pattern=r"^\d+\.\d+\.\d+$",
        description="the Powertools release whose public layer the functions run with; the one "
        "constraints.txt pins (tests/unit/test_config.py)",
    )
    web_adapter_layer_version: int = Field(ge=1, description="the public LambdaAdapterLayerArm64 layer")
    sse: SseConfig = SseConfig()
    degradation: DegradationConfig = DegradationConfig()

    @property
    def stack_name(self) -> str:
        return f"Streaming-{self.name}"

    @property
    def replay_window_seconds(self) -> int:
        return self.replay_window_hours * 3600

    @property
    def reserved_concurrency(self) -> dict[str, int]:
        """Function -> the concurrency it reserves, for those that reserve any."""
        reservations = {"publish": self.publish_reserved_concurrency, "SSE": self.sse.reserved_concurrency}
        return {function: count for function, count in reservations.items() if count is not None}

    @property
    def concurrency_needed(self) -> int:
        """Unreserved concurrency the account must have for the reservations: theirs plus what Lambda
        keeps unreserved (nothing when nothing is reserved)."""
        reserved = sum(self.reserved_concurrency.values())
        return reserved + MIN_UNRESERVED_CONCURRENCY if reserved else 0

    def describe_reservations(self) -> str:
        """E.g. "150 (publish 50, SSE 100)"."""
        named = ", ".join(f"{function} {count}" for function, count in self.reserved_concurrency.items())
        return f"{sum(self.reserved_concurrency.values())} ({named})"

    def concurrency_quota_warning(self) -> str | None:
        """What synth says when the reservations do not fit the stated `concurrency_quota`."""
        if self.concurrency_needed <= self.concurrency_quota:
            return None
        return (
            f"{self.name} reserves {self.describe_reservations()} concurrent executions; with the "
            f"{MIN_UNRESERVED_CONCURRENCY} Lambda keeps unreserved it needs an account quota of at least "
            f"{self.concurrency_needed}, above concurrency_quota {self.concurrency_quota}: the deploy would "
            "fail. Raise the account's 'Concurrent executions' quota (Service Quotas, AWS Lambda) or lower "
            "the reservations in cdk.json"
        )

    @model_validator(mode="before")
    @classmethod
    def _hs256_issuer_names_the_environment(cls, data: Any) -> Any:
        """Tokens one environment issues are refused by every other one."""
        auth = data.get("auth") if isinstance(data, dict) else None
        if isinstance(auth, dict) and auth.get("mode") == "hs256" and "issuer" not in auth:
            return {**data, "auth": {**auth, "issuer": f"streaming-{data.get('name')}"}}
        return data

    @field_validator("region")
    @classmethod
    def _region_runs_these_stacks(cls, region: str | None) -> str | None:
        problem = None if region is None else region_problem(region)
        if problem:
            raise ValueError(problem)
        return region

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        bad = [origin for origin in origins if not _ORIGIN.match(origin)]
        if bad:
            raise ValueError(f"origins must be scheme://host[:port] with no path: {bad}")
        return origins

    @field_validator("event_types")
    @classmethod
    def _streams(cls, event_types: dict[str, str]) -> dict[str, str]:
        EventCatalog.load(frozenset(event_types))  # every configured type has a schema
        bad = {t: s for t, s in event_types.items() if not re.match(STREAM_NAME_PATTERN, s)}
        if bad:
            raise ValueError(f"stream names must match {STREAM_NAME_PATTERN}: {bad}")
        return event_types

    @model_validator(mode="after")
    def _roles_grant_known_types(self) -> EnvironmentConfig:
        for role, types in self.roles.items():
            unknown = set(types) - set(self.event_types)
            if unknown:
                raise ValueError(f"role {role} grants unknown event types {sorted(unknown)}")
        batch = self.max_batch_events
        small = {name: burst for name, burst in self.publish_rate.bursts().items() if burst < batch}
        if small:
            raise ValueError(
                f"publish_rate bursts must hold a whole batch (max_batch_events {batch}): {small}"
            )
        if self.retain_data is False and self.deletion_protection:
            raise ValueError("deletion_protection needs retain_data")
        degradation = self.degradation
        problems = coalescing_problems(
            degradation.coalesce_types, degradation.must_deliver_types, self.event_types
        )
        if problems:
            raise ValueError(f"degradation: {'; '.join(problems)}")
        return self

    def runtime_settings(self, events_table: str) -> Settings:
        """What the handlers read from their environment, for this environment's config."""
        return Settings(
            events_table=events_table,
            streams_by_type=self.event_types,
            role_grants={role: tuple(types) for role, types in self.roles.items()},
            replay_window_seconds=self.replay_window_seconds,
            max_event_bytes=self.max_event_bytes,
            max_batch_events=self.max_batch_events,
            coalesce_types=tuple(self.degradation.coalesce_types),
            must_deliver_types=tuple(self.degradation.must_deliver_types),
            coalesce_above_events=self.degradation.coalesce_above_events,
        )

    def publish_rate_settings(self) -> PublishRateSettings:
        """What the HTTP publish function reads from its environment to limit each publisher."""
        rate = self.publish_rate
        return PublishRateSettings(
            rate=rate.events_per_second,
            burst=rate.burst,
            overrides={name: (p.events_per_second, p.burst) for name, p in rate.principals.items()},
        )

    def delivery_settings(
        self, connections_table: str, management_url: str, fanout_function: str
    ) -> DeliverySettings:
        """What the functions that deliver over the WebSocket API read from their environment."""
        return DeliverySettings(
            connections_table=connections_table,
            management_url=management_url,
            fanout_function=fanout_function,
            fanout_chunk_connections=self.fanout_chunk_connections,
            compress_above_bytes=self.compress_above_bytes,
            messages_per_second=float(self.rate_limits.websocket_messages_per_second),
            burst=self.rate_limits.websocket_burst,
        )

    def auth_settings(self, secret_arn: str = "") -> AuthSettings:
        """What token verification reads from its environment; `secret_arn` (the HS256 key) for hs256 only."""
        hs256 = self.auth.mode == "hs256"
        return AuthSettings(
            mode=self.auth.mode,
            audience=self.auth.audience,
            issuer=self.auth.issuer,
            role_claim=self.auth.role_claim,
            allowed_origins=tuple(self.allowed_origins),
            secret_arn=secret_arn if hs256 else "",
            jwks_url="" if hs256 else (self.auth.jwks_url or ""),
        )

    def sse_cors(self) -> Cors:
        """CORS of the SSE Function URL: GET from the allowed origins, preflight answered by the URL."""
        return Cors(
            allowed_origins=tuple(self.allowed_origins),
            allowed_methods=("GET",),
            allowed_headers=SSE_CORS_ALLOWED_HEADERS,
            max_age_seconds=SSE_CORS_MAX_AGE_SECONDS,
        )

    @property
    def probe_role(self) -> str | None:
        """The role the synthetic probe's tokens carry: the first that sees its event type, if any."""
        return next((role for role, types in self.roles.items() if PROBE_EVENT_TYPE in types), None)

    def probe_settings(self, websocket_url: str, sse_url: str, publish_url: str) -> ProbeSettings:
        """What the synthetic probe reads from its environment (it needs a role that sees its type)."""
        if self.probe_role is None:
            raise ValueError(f"no role sees {PROBE_EVENT_TYPE}: the probe could not receive its event")
        return ProbeSettings(
            websocket_url=websocket_url, sse_url=sse_url, publish_url=publish_url, role=self.probe_role
        )

    def sse_settings(self, connections_table: str, websocket_url: str) -> SseSettings:
        """What the SSE app reads from its environment; open streams are counted in `connections_table`,
        and relay from the WebSocket API at `websocket_url` if `sse.push` is on."""
        return SseSettings(
            poll_interval_ms=self.sse.poll_interval_ms,
            heartbeat_seconds=self.sse.heartbeat_seconds,
            max_stream_seconds=self.sse.max_stream_seconds,
            retry_ms=self.sse.retry_ms,
            compress_above_bytes=self.compress_above_bytes,
            max_streams_per_subject=self.sse.max_streams_per_subject,
            streams_table=connections_table,
            push_url=websocket_url if self.sse.push else "",
        )


def load(name: str, context: dict[str, Any] | None = None) -> EnvironmentConfig:
    """The configuration of one environment; account and region fall back to the deploying user's."""
    if context is None:
        context = json.loads((ROOT / "cdk.json").read_text())["context"]["streaming"]
    environments = context["environments"]
    if name not in environments:
        raise ValueError(f"unknown environment {name!r}; known: {sorted(environments)}")
    merged = {**context["defaults"], **environments[name], "name": name}
    merged.setdefault("account", os.environ.get("CDK_DEFAULT_ACCOUNT"))
    merged.setdefault("region", os.environ.get("CDK_DEFAULT_REGION"))
    return EnvironmentConfig.model_validate(merged)
