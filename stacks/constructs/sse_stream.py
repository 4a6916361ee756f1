"""Server-Sent Events over Lambda response streaming: the `sse` ASGI app under uvicorn, started and
proxied by the AWS Lambda Web Adapter layer, behind a public Function URL that streams. The app checks
its own tokens (Bearer header or short-lived `token` query parameter), as the WebSocket authorizer does.

Each open stream holds one function invocation until it ends itself (`sse.max_stream_seconds`), so
`sse.reserved_concurrency` is the cap on open streams and on what they cost."""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Duration
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks import public_layers
from stacks.config import EnvironmentConfig
from stacks.constructs.connection_store import ConnectionStore
from stacks.constructs.events_table import EventsTable
from stacks.constructs.lambda_code import PythonFunctionFactory
from stacks.constructs.token_auth import TokenAuth
from streaming import constants as c

# The app answers GET /healthz; the adapter waits for it before passing the first request on.
READINESS_CHECK_PATH = "/healthz"


def adapter_environment() -> dict[str, str]:
    """How the adapter starts and reaches the app: it wraps the runtime's bootstrap, waits for the
    readiness path on the app's port, and streams each response back as it is written."""
    port = str(c.SSE_PORT)
    return {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
        "AWS_LWA_INVOKE_MODE": "response_stream",
        "AWS_LWA_PORT": port,
        "PORT": port,  # what the start script passes to uvicorn
        "AWS_LWA_READINESS_CHECK_PATH": READINESS_CHECK_PATH,
    }


class SseStream(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        functions: PythonFunctionFactory,
        store: EventsTable,
        connections: ConnectionStore,
        auth: TokenAuth,
        websocket_url: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.function = self._build_function(functions, store, connections, auth, websocket_url)
        # Replay and stream heads, then new events (polled, or pushed and read at a gap): reads only.
        store.grant_read_access(self.function)
        # Each open stream holds a lease (`sse#<subject>` items), counted per token subject.
        connections.grant_leases(self.function)
        auth.grant_verify(self.function)
        self.url = self._build_url()

        CfnOutput(self, c.OUTPUT_SSE_URL, key=c.OUTPUT_SSE_URL, value=self.url.url)

    def _build_function(
        self,
        functions: PythonFunctionFactory,
        store: EventsTable,
        connections: ConnectionStore,
        auth: TokenAuth,
        websocket_url: str,
    ) -> lambda_.Function:
        config = self._config
        parts = (
            config.runtime_settings(store.table.table_name).to_env(),
            auth.environment(),
            # Streams relay from the WebSocket API as one of its clients, with their subscriber's token:
            # no grant (sse.push, docs/architecture.md).
            config.sse_settings(connections.table_name, websocket_url).to_env(),
            adapter_environment(),
        )
        environment: dict[str, str] = {}
        for part in parts:
            clash = set(environment) & set(part)
            if clash:
                raise ValueError(f"SSE environment variables set twice: {sorted(clash)}")
            environment.update(part)
        web_adapter = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "WebAdapterLayer",
            public_layers.web_adapter_layer_arn(
                config.web_adapter_layer_version, partition=Aws.PARTITION, region=Aws.REGION
            ),
        )
        return functions.function(
            self,
            "Function",
            handler=c.SSE_START_SCRIPT,
            description="GET /events as Server-Sent Events over response streaming (uvicorn behind the "
            "Lambda Web Adapter)",
            environment=environment,
            timeout=Duration.seconds(config.sse.timeout_seconds),
            memory_size=config.sse.memory_mb,
            extra_layers=[web_adapter],
            reserved_concurrent_executions=config.sse.reserved_concurrency,
        )

    def _build_url(self) -> lambda_.FunctionUrl:
        cors = self._config.sse_cors()  # the local stack serves the same (local/lambda_runtime.py)
        return self.function.add_function_url(
            # Public: the app verifies the token, the role and the Origin itself, and audit-logs refusals.
            auth_type=lambda_.FunctionUrlAuthType.NONE,
            invoke_mode=lambda_.InvokeMode.RESPONSE_STREAM,
            cors=lambda_.FunctionUrlCorsOptions(
                allowed_origins=list(cors.allowed_origins),
                # The Function URL answers preflight (OPTIONS) requests itself from this configuration;
                # AllowMethods cannot name OPTIONS (CloudFormation allows GET, PUT, HEAD, POST, PATCH,
                # DELETE and *).
                allowed_methods=[getattr(lambda_.HttpMethod, method) for method in cors.allowed_methods],
                allowed_headers=list(cors.allowed_headers),
                max_age=Duration.seconds(cors.max_age_seconds),
            ),
        )
