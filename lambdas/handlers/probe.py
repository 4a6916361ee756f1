"""Runs every minute: the synthetic probe (streaming/probe.py). Publishes a `system.status` event and
times its arrival over the WebSocket API and SSE; emits ProbeSuccess and ProbeLatency by transport, and
ProbePublishSuccess."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.composition import probe_publisher, probe_settings, probe_token
from streaming import probe
from streaming.observability import logger, metrics


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = probe_settings()
    result = asyncio.run(
        probe.run(
            settings.websocket_url,
            urljoin(settings.sse_url, "events"),
            probe_token(),
            probe_publisher(),
        )
    )
    result.record()
    return result.to_dict()
