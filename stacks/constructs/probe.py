"""The synthetic probe: a function that runs every minute, publishes one `system.status` event through
the publish Function URL and times its arrival over the WebSocket API and SSE, so the service levels
are measured in the deployed stack (docs/operations.md, "Synthetic probe").

It signs its own short-lived tokens with the stack's HS256 key, so it exists only where the stack has
one (`auth.mode` hs256); with OIDC tokens it is left out, with a warning at synth."""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.lambda_code import PythonFunctionFactory
from stacks.constructs.publish_api import PublishApi
from stacks.constructs.sse_stream import SseStream
from stacks.constructs.token_auth import TokenAuth
from stacks.constructs.websocket_api import WebSocketApi
from streaming import constants as c

# The probe mostly waits on the network.
MEMORY_MB = 256


class SyntheticProbe(Construct):
    @classmethod
    def where_possible(
        cls, scope: Construct, construct_id: str, *, config: EnvironmentConfig, auth: TokenAuth, **parts: Any
    ) -> SyntheticProbe | None:
        """The probe, or None (and a synth warning) where it could not sign tokens or see its event."""
        why_not = None
        if auth.signing_key is None:
            why_not = f"it signs its tokens with the stack's HS256 key, and auth.mode is {config.auth.mode}"
        elif config.probe_role is None:
            why_not = f"no role sees {c.PROBE_EVENT_TYPE}, the type of the event it publishes"
        if why_not is not None:
            Annotations.of(scope).add_warning_v2(
                "streaming:probe-left-out",
                f"No synthetic probe in {config.name}: {why_not}. The probe alarms are left out too.",
            )
            return None
        return cls(scope, construct_id, config=config, auth=auth, **parts)

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        functions: PythonFunctionFactory,
        auth: TokenAuth,
        live: WebSocketApi,
        sse: SseStream,
        publish: PublishApi,
    ) -> None:
        super().__init__(scope, construct_id)
        settings = config.probe_settings(live.stage.url, sse.url.url, publish.url.url)
        self.function = functions.function(
            self,
            "Function",
            handler=c.HANDLER_PROBE,
            description="Synthetic probe: publishes a system.status event and times its arrival over "
            "WebSocket and SSE; runs on a schedule",
            environment={**settings.to_env(), **auth.environment()},
            timeout=Duration.seconds(c.PROBE_TIMEOUT_SECONDS),
            memory_size=MEMORY_MB,
            # No retry: a run that failed is a measurement (and the next one comes in a minute); a late
            # run measures nothing of the minute it was meant for.
            retry_attempts=0,
            max_event_age=Duration.minutes(1),
        )
        auth.grant_sign(self.function)
        # POST /events through the Function URL: both actions, on the unqualified ARN only (the URL
        # serves $LATEST; grant_invoke would add every version and alias, ARN:*).
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunctionUrl", "lambda:InvokeFunction"],
                resources=[publish.http_function.function_arn],
            )
        )
        events.Rule(
            self,
            "Schedule",
            description=f"Runs the synthetic probe ({config.name})",
            schedule=events.Schedule.rate(Duration.minutes(c.PROBE_INTERVAL_MINUTES)),
            targets=[targets.LambdaFunction(self.function)],
        )
