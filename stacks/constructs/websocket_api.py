"""Live delivery over an API Gateway WebSocket API: the `$connect` authorizer, one route handler for
every route, the fan-out worker, the scheduled sweeper that tells connections about to expire to
reconnect and closes the expired ones, and a throttled, access-logged stage. The connections table
and the token settings are shared with SSE and come from their own constructs."""

from __future__ import annotations

from typing import Any, cast

import jsii
from aws_cdk import Acknowledgment, Aws, CfnElement, CfnOutput, Duration, Stack, Validations
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.connection_store import ConnectionStore
from stacks.constructs.events_table import EventsTable
from stacks.constructs.lambda_code import PythonFunctionFactory
from stacks.constructs.log_groups import retained_log_group
from stacks.constructs.token_auth import TokenAuth
from streaming import constants as c

ROUTE_SELECTION_EXPRESSION = "$request.body.action"
CONNECT_ROUTE = "$connect"
# Every route goes to the route handler; only $connect can carry an authorizer in a WebSocket API.
ROUTES = (CONNECT_ROUTE, "$disconnect", "$default", *c.WEBSOCKET_ACTIONS)

# The @connections methods each function calls (lambdas/streaming/session.py, fanout.py); none calls GET.
# Whoever delivers only posts (a 410 removes the connection's records, it is not closed).
DELIVERY_MANAGEMENT_METHODS = ("POST",)
# The route handler posts answers and closes (DELETE) connections that expired or abuse the rate limit.
ROUTE_HANDLER_MANAGEMENT_METHODS = ("POST", "DELETE")
# The sweeper closes expired connections and posts the `reconnect` notice to those about to expire.
SWEEPER_MANAGEMENT_METHODS = ("POST", "DELETE")

# Tokens travel in the query string and in headers, so neither is ever logged.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "connectionId": "$context.connectionId",
    "eventType": "$context.eventType",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "sourceIp": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "error": "$context.error.message",
    "principalId": "$context.authorizer.principalId",
    "integrationLatency": "$context.integrationLatency",
}


@jsii.implements(apigwv2.IAccessLogSettings)
class _AccessLogSettings:
    def __init__(self, destination: apigwv2.IAccessLogDestination, log_format: apigateway.AccessLogFormat):
        self._destination = destination
        self._format = log_format

    @property
    def destination(self) -> apigwv2.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigateway.AccessLogFormat:
        return self._format


def access_log_format() -> apigateway.AccessLogFormat:
    """One JSON object per line; every value quoted so an empty one still parses."""
    return apigateway.AccessLogFormat.custom(
        "{" + ",".join(f'"{name}":"{variable}"' for name, variable in ACCESS_LOG_FIELDS.items()) + "}"
    )


class WebSocketApi(Construct):
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
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.connections = connections
        self._auth = auth
        self.api = apigwv2.WebSocketApi(
            self,
            "Api",
            api_name=f"streaming-{config.name}",
            description=f"Live event delivery ({config.name})",
            route_selection_expression=ROUTE_SELECTION_EXPRESSION,
        )
        self.stage = self._build_stage()

        runtime = config.runtime_settings(store.table.table_name).to_env()
        self.fanout_worker = self._build_fanout_worker(functions, runtime)
        self.route_handler = self._build_route_handler(functions, runtime)
        self.authorizer = self._build_authorizer(functions, runtime)
        self.sweeper = self._build_sweeper(functions, runtime)
        self._add_routes()

        store.grant_read_access(self.route_handler)
        store.grant_lookup_access(self.fanout_worker)
        connections.grant_route_handler(self.route_handler)
        connections.grant_delivery(self.fanout_worker)
        self._grant_management_api(self.route_handler, ROUTE_HANDLER_MANAGEMENT_METHODS)
        self._grant_management_api(self.fanout_worker, DELIVERY_MANAGEMENT_METHODS)
        # The sweeper never reads the events table (it builds no store).
        connections.grant_sweeper(self.sweeper)
        connections.grant_stats(self.sweeper)  # it counts the connections after each sweep
        connections.grant_notices(self.sweeper)  # it marks the reconnect notices it sent
        self._grant_management_api(self.sweeper, SWEEPER_MANAGEMENT_METHODS)

        CfnOutput(self, c.OUTPUT_WEBSOCKET_URL, key=c.OUTPUT_WEBSOCKET_URL, value=self.stage.url)

    @property
    def management_url(self) -> str:
        """The stage's @connections endpoint: https://{api}.execute-api.{region}.{suffix}/{stage}.
        Built from the API id and a fixed stage name, so functions can name it without a cycle."""
        return self.stage.callback_url

    def attach_publisher(self, function: lambda_.Function) -> None:
        """A publish function fans out right after storing: inline to a small audience, through the
        worker (invoked asynchronously) for a large one."""
        for name, value in self._delivery_environment(
            fanout_function=self.fanout_worker.function_name
        ).items():
            function.add_environment(name, value)
        self.connections.grant_delivery(function)
        self._grant_management_api(function, DELIVERY_MANAGEMENT_METHODS)
        # The unqualified ARN only ($LATEST); grant_invoke would add every version and alias (ARN:*).
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[self.fanout_worker.function_arn]
            )
        )

    def _delivery_environment(self, *, fanout_function: str) -> dict[str, str]:
        return self._config.delivery_settings(
            self.connections.table_name, self.management_url, fanout_function
        ).to_env()

    def _build_stage(self) -> apigwv2.WebSocketStage:
        # API Gateway writes these logs with the account's CloudWatch Logs role (one per account and
        # region, set once outside these stacks, as the CDK recommends for that singleton).
        log_group = retained_log_group(self, "AccessLogs", self._config)
        return apigwv2.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=self._config.name,
            auto_deploy=True,
            throttle=apigwv2.ThrottleSettings(
                rate_limit=self._config.rate_limits.api_rate_per_second,
                burst_limit=self._config.rate_limits.api_burst,
            ),
            access_log_settings=_AccessLogSettings(
                apigwv2.LogGroupLogDestination(log_group), access_log_format()
            ),
        )

    def _environment_without_fanout(self, runtime: dict[str, str]) -> dict[str, str]:
        """For a function that delivers (or closes connections) itself and never hands chunks on."""
        return {**runtime, **self._delivery_environment(fanout_function="")}

    def _build_fanout_worker(
        self, functions: PythonFunctionFactory, runtime: dict[str, str]
    ) -> lambda_.Function:
        return functions.function(
            self,
            "FanoutWorker",
            handler=c.HANDLER_FANOUT_WORKER,
            description="Delivers an event to one chunk of its audience; publishers invoke it asynchronously",
            # The worker delivers the chunk it was given and never fans out again.
            environment=self._environment_without_fanout(runtime),
            timeout=Duration.seconds(c.FANOUT_TIMEOUT_SECONDS),
            # No retry: a retried chunk would post frames its connections already received. A frame
            # lost instead is a gap the client sees by seq (and in the heads on pong) and repairs by replay.
            retry_attempts=0,
            # A frame held back by throttling is still correct later, but not hours later.
            max_event_age=Duration.minutes(5),
        )

    def _build_route_handler(
        self, functions: PythonFunctionFactory, runtime: dict[str, str]
    ) -> lambda_.Function:
        return functions.function(
            self,
            "RouteHandler",
            handler=c.HANDLER_WEBSOCKET,
            description="WebSocket $connect, $disconnect, $default, subscribe, unsubscribe, ping, replay",
            # It answers and replays to one connection at a time and never fans out.
            environment=self._environment_without_fanout(runtime),
            timeout=Duration.seconds(c.WEBSOCKET_TIMEOUT_SECONDS),
        )

    def _build_authorizer(
        self, functions: PythonFunctionFactory, runtime: dict[str, str]
    ) -> lambda_.Function:
        function = functions.function(
            self,
            "ConnectAuthorizer",
            handler=c.HANDLER_WS_AUTHORIZER,
            description="$connect authorizer: token, role and origin checks; refusals audit-logged",
            environment={**runtime, **self._auth.environment()},
            timeout=Duration.seconds(c.AUTHORIZER_TIMEOUT_SECONDS),
        )
        self._auth.grant_verify(function)
        return function

    def _build_sweeper(self, functions: PythonFunctionFactory, runtime: dict[str, str]) -> lambda_.Function:
        function = functions.function(
            self,
            "ExpirySweeper",
            handler=c.HANDLER_WS_SWEEPER,
            description="Closes expired WebSocket connections, tells those about to expire to reconnect; "
            "runs on a schedule",
            environment=self._environment_without_fanout(runtime),
            timeout=Duration.seconds(c.SWEEPER_TIMEOUT_SECONDS),
            # No reserved concurrency: reserving any fails to deploy where the account's quota is low
            # (Lambda keeps 100 unreserved). Overlapping sweeps are harmless: closing a closed connection
            # answers 410 and removing removed records is a no-op.
            # No retry: the next scheduled run sweeps whatever this one left.
            retry_attempts=0,
        )
        events.Rule(
            self,
            "ExpirySweepSchedule",
            description=f"Runs the WebSocket expiry sweeper ({self._config.name})",
            schedule=events.Schedule.rate(Duration.minutes(c.SWEEP_INTERVAL_MINUTES)),
            targets=[targets.LambdaFunction(function)],
        )
        return function

    def _add_routes(self) -> None:
        integration = integrations.WebSocketLambdaIntegration("RouteHandler", self.route_handler)
        for route_key in ROUTES:
            options: dict[str, Any] = {"integration": integration}
            if route_key == CONNECT_ROUTE:
                options["authorizer"] = authorizers.WebSocketLambdaAuthorizer(
                    "ConnectAuthorizer", self.authorizer
                )
            route = self.api.add_route(route_key, **options)
            if route_key != CONNECT_ROUTE:
                Validations.of(route).acknowledge(
                    Acknowledgment(
                        id="AwsSolutions-APIG4",
                        reason="A WebSocket API authorizes only $connect; messages on this route arrive on a "
                        "connection the $connect authorizer admitted, and the handler re-checks the "
                        "connection's role",
                    )
                )
        _without_identity_source(self.api)

    def _grant_management_api(self, function: lambda_.Function, methods: tuple[str, ...]) -> None:
        """execute-api:ManageConnections for `methods` on this API's stage only. Connection ids exist only
        at run time, hence the one wildcard, which cdk-nag is told about here."""
        stage = self.stage.stage_name
        arns = [
            f"arn:{Aws.PARTITION}:execute-api:{Aws.REGION}:{Aws.ACCOUNT_ID}:{self.api.api_id}"
            f"/{stage}/{method}/@connections/*"
            for method in methods
        ]
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["execute-api:ManageConnections"], resources=arns)
        )
        api_logical_id = Stack.of(self).get_logical_id(cast(CfnElement, self.api.node.default_child))
        for method in methods:
            Validations.of(function).acknowledge(
                Acknowledgment(
                    id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:"
                    f"<AWS::AccountId>:<{api_logical_id}>/{stage}/{method}/@connections/*]",
                    reason="Connection ids are only known at run time; the grant is limited to this API's "
                    f"stage and to the {method} method of its @connections API",
                )
            )


def _without_identity_source(api: apigwv2.WebSocketApi) -> None:
    """The token may come in Sec-WebSocket-Protocol, Authorization or ?token=. API Gateway answers 401
    without calling the authorizer when any identity source is missing, so there must be none (the L2
    defaults to the Authorization header). Without identity sources nothing can be cached, so every
    $connect is decided by the authorizer itself."""
    [authorizer] = [child for child in api.node.find_all() if isinstance(child, apigwv2.CfnAuthorizer)]
    authorizer.add_property_deletion_override("IdentitySource")
