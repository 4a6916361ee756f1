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

# Event table layout: one table, string partition key, numeric sort key, TTL attribute.
PARTITION_KEY: Final = "pk"
SORT_KEY: Final = "sk"
TTL_ATTRIBUTE: Final = "expires_at"

# CloudFormation output keys; the local stack writes the same keys to .local/endpoints.json.
OUTPUT_PUBLISH_URL: Final = "PublishUrl"
OUTPUT_EVENTS_TABLE: Final = "EventsTableName"
OUTPUT_EVENT_BUS: Final = "EventBusName"

# The publish functions' timeout; a publisher stops trying to commit a little before it.
PUBLISH_TIMEOUT_SECONDS: Final = 30

# Stream names appear in table keys and cursors.
STREAM_NAME_PATTERN: Final = r"^[a-z][a-z0-9-]{0,31}$"

# Connections table layout: string partition and sort keys, TTL attribute as above.
CONNECTION_TTL_SECONDS: Final = 2 * 3600 + 15 * 60  # past API Gateway's 2-hour connection limit
