"""Names shared by the CDK stacks and the runtime code: environment variables, table layout, metrics."""

from typing import Final

SERVICE_NAME: Final = "streaming"
METRICS_NAMESPACE: Final = "RealtimeStreaming"

# Environment variables the handlers read (set by the stack, and by the local stack).
ENV_EVENTS_TABLE: Final = "EVENTS_TABLE_NAME"
ENV_EVENT_STREAMS: Final = "EVENT_STREAMS"  # JSON object: event type -> stream name
ENV_ROLE_MATRIX: Final = "ROLE_MATRIX"  # JSON object: role -> list of event types
ENV_REPLAY_WINDOW_SECONDS: Final = "REPLAY_WINDOW_SECONDS"
ENV_MAX_EVENT_BYTES: Final = "MAX_EVENT_BYTES"
ENV_MAX_BATCH_EVENTS: Final = "MAX_BATCH_EVENTS"
# Graceful degradation (streaming.coalesce): what may be coalesced by key, and when.
ENV_COALESCE_TYPES: Final = "COALESCE_TYPES"  # JSON list of event types
ENV_MUST_DELIVER_TYPES: Final = "MUST_DELIVER_TYPES"  # JSON list: never coalesced
ENV_COALESCE_ABOVE_EVENTS: Final = "COALESCE_ABOVE_EVENTS"  # events pending for one subscriber
# Types that are must-deliver in every configuration: configuring one otherwise is an error.
ALWAYS_MUST_DELIVER: Final = frozenset({"risk.alert"})

# Each HTTP publisher's token bucket (the HTTP publish function).
ENV_PUBLISH_RATE: Final = "PUBLISH_RATE"  # events per second a publisher may send on average
ENV_PUBLISH_BURST: Final = "PUBLISH_BURST"  # events it may send at once after a pause
ENV_PUBLISH_RATE_OVERRIDES: Final = "PUBLISH_RATE_OVERRIDES"  # JSON object: principal -> [rate, burst]

# Live delivery over the WebSocket API (publish functions, WebSocket handler, fan-out worker).
ENV_CONNECTIONS_TABLE: Final = "CONNECTIONS_TABLE_NAME"
ENV_MANAGEMENT_URL: Final = "WEBSOCKET_MANAGEMENT_URL"  # https://{api}.execute-api.{region}.{suffix}/{stage}
ENV_FANOUT_FUNCTION: Final = "FANOUT_FUNCTION_NAME"  # worker invoked asynchronously for large audiences
ENV_FANOUT_CHUNK_CONNECTIONS: Final = "FANOUT_CHUNK_CONNECTIONS"
ENV_COMPRESS_ABOVE_BYTES: Final = "COMPRESS_ABOVE_BYTES"
ENV_WS_MESSAGES_PER_SECOND: Final = "WS_MESSAGES_PER_SECOND"
ENV_WS_BURST: Final = "WS_BURST"
ENV_WS_MAX_CONNECTION_SECONDS: Final = "WS_MAX_CONNECTION_SECONDS"  # shortened by the local stack's tests

# SSE over Lambda response streaming (the sse package, run by uvicorn behind the Lambda Web Adapter).
ENV_SSE_POLL_INTERVAL_MS: Final = "SSE_POLL_INTERVAL_MS"  # how often an open stream reads the store
ENV_SSE_HEARTBEAT_SECONDS: Final = "SSE_HEARTBEAT_SECONDS"
ENV_SSE_MAX_STREAM_SECONDS: Final = "SSE_MAX_STREAM_SECONDS"  # a stream ends itself before the timeout
ENV_SSE_RETRY_MS: Final = "SSE_RETRY_MS"  # the retry: hint sent when a stream ends itself
ENV_SSE_MAX_STREAMS_PER_SUBJECT: Final = "SSE_MAX_STREAMS_PER_SUBJECT"  # leases in the connections table
# The WebSocket API a stream relays its events from (streaming.relay); unset: streams poll the store.
ENV_SSE_PUSH_URL: Final = "SSE_PUSH_URL"

# Token verification ($connect authorizer, SSE).
ENV_AUTH_MODE: Final = "AUTH_MODE"  # "hs256" (secret in Secrets Manager) or "oidc" (issuer's JWKS)
ENV_AUTH_AUDIENCE: Final = "AUTH_AUDIENCE"
ENV_AUTH_ISSUER: Final = "AUTH_ISSUER"
ENV_AUTH_ROLE_CLAIM: Final = "AUTH_ROLE_CLAIM"
ENV_AUTH_SECRET_ARN: Final = "AUTH_SECRET_ARN"  # noqa: S105 - hs256: the ARN of the signing key
ENV_AUTH_JWKS_URL: Final = "AUTH_JWKS_URL"  # oidc
ENV_ALLOWED_ORIGINS: Final = "ALLOWED_ORIGINS"  # JSON list

# The synthetic probe (where to reach the deployed stack, and the role it subscribes as).
ENV_PROBE_WEBSOCKET_URL: Final = "PROBE_WEBSOCKET_URL"  # wss://{api}.execute-api.../{stage}
ENV_PROBE_SSE_URL: Final = "PROBE_SSE_URL"  # the SSE function's URL (output SseUrl); it reads <url>events
ENV_PROBE_PUBLISH_URL: Final = "PROBE_PUBLISH_URL"  # the publish function's URL (output PublishUrl)
ENV_PROBE_ROLE: Final = "PROBE_ROLE"  # a role that sees the probe's event type

# Event table layout: one table, string partition key, numeric sort key, TTL attribute.
PARTITION_KEY: Final = "pk"
SORT_KEY: Final = "sk"
TTL_ATTRIBUTE: Final = "expires_at"
STATS_PARTITION = "stats"  # the connections table's partition of the connection stats item
EXPIRY_PARTITION: Final = "expiry"  # the connections table's partition of the connections' expiry records

# CloudFormation output keys; the local stack writes the same keys to .local/endpoints.json.
OUTPUT_PUBLISH_URL: Final = "PublishUrl"
OUTPUT_EVENTS_TABLE: Final = "EventsTableName"
OUTPUT_EVENT_BUS: Final = "EventBusName"
OUTPUT_WEBSOCKET_URL: Final = "WebSocketUrl"
OUTPUT_CONNECTIONS_TABLE: Final = "ConnectionsTableName"
OUTPUT_SSE_URL: Final = "SseUrl"
OUTPUT_AUTH_SECRET_ARN: Final = "AuthSecretArn"  # noqa: S105 - a name, not a secret
OUTPUT_DASHBOARD_URL: Final = "DashboardUrl"  # deployed stacks only: the CloudWatch console

# The publish functions' timeout; a publisher stops trying to commit a little before it.
PUBLISH_TIMEOUT_SECONDS: Final = 30

# Stream names appear in table keys and cursors.
STREAM_NAME_PATTERN: Final = r"^[a-z][a-z0-9-]{0,31}$"

# API Gateway closes a WebSocket connection (1001) after 2 hours, and after 10 minutes without a
# message from its client (API Gateway developer guide, "WebSocket API status codes").
WEBSOCKET_CONNECTION_LIMIT_SECONDS: Final = 2 * 3600
WEBSOCKET_IDLE_TIMEOUT_SECONDS: Final = 10 * 60

# The client actions, each an API Gateway route selected by the message's "action" field
# (docs/protocol.md); $connect, $disconnect and $default are API Gateway's own.
WEBSOCKET_ACTIONS: Final = ("subscribe", "unsubscribe", "ping", "replay")
# A fan-out chunk travels in an asynchronous Lambda invocation (at most 256 KB): about 110 bytes per
# connection.
MAX_FANOUT_CHUNK_CONNECTIONS: Final = 2000

# The WebSocket functions' timeouts: API Gateway waits 29 s for an integration.
WEBSOCKET_TIMEOUT_SECONDS: Final = 29
FANOUT_TIMEOUT_SECONDS: Final = 60
AUTHORIZER_TIMEOUT_SECONDS: Final = 10
SWEEPER_TIMEOUT_SECONDS: Final = 60  # one scheduled sweep of expired connections

# Handler entry points (module.function), shared by the stack and the local stack.
HANDLER_PUBLISH_HTTP: Final = "handlers.publish_http.handler"
HANDLER_PUBLISH_EVENTBRIDGE: Final = "handlers.publish_eventbridge.handler"
HANDLER_WS_AUTHORIZER: Final = "handlers.ws_authorizer.handler"
HANDLER_WEBSOCKET: Final = "handlers.websocket.handler"  # $connect, $disconnect, $default and actions
HANDLER_FANOUT_WORKER: Final = "handlers.fanout_worker.handler"
# The SSE function's handler is the adapter's start script, which execs uvicorn on the ASGI app.
SSE_START_SCRIPT: Final = "sse/run.sh"
SSE_APP: Final = "sse.app:app"
SSE_PORT: Final = 8080  # the Lambda Web Adapter's default AWS_LWA_PORT
HANDLER_WS_SWEEPER: Final = "handlers.ws_sweeper.handler"  # closes expired connections, notifies them first
SWEEP_INTERVAL_MINUTES: Final = 1
# A connection expires (`welcome.expires_at`) when its token does, and at the latest one sweep before
# API Gateway's cut, so that the sweep closes it, after a `reconnect` notice (docs/protocol.md).
MAX_CONNECTION_SECONDS: Final = WEBSOCKET_CONNECTION_LIMIT_SECONDS - SWEEP_INTERVAL_MINUTES * 60
# The sweep sends the notice this long before a connection expires; never in the first half of its life.
RECONNECT_NOTICE_SECONDS: Final = 5 * 60
# Connection records (connections table; TTL attribute as above) outlive their connection by this much,
# so a sweep or a `$disconnect` that comes late still finds what to remove.
CONNECTION_RECORD_GRACE_SECONDS: Final = 15 * 60
# Every minute, publishes a system.status event and times its arrival over each transport.
HANDLER_PROBE: Final = "handlers.probe.handler"
PROBE_INTERVAL_MINUTES: Final = 1
PROBE_TIMEOUT_SECONDS: Final = 30  # connect (10 s at most) + publish + wait for the event (10 s at most)
PROBE_EVENT_TYPE: Final = "system.status"
PROBE_COMPONENT: Final = "streaming-probe"  # the `component` of its events, and its tokens' subject
