"""The publish path: an IAM-authenticated HTTP endpoint and an EventBridge bus, one publish code."""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.events_table import EventsTable
from stacks.constructs.lambda_code import PythonFunctionFactory
from stacks.constructs.removal import removal_policy
from streaming import constants as c


class PublishApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        functions: PythonFunctionFactory,
        store: EventsTable,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        environment = config.runtime_settings(store.table.table_name).to_env()
        self.http_function = self._build_http_function(
            functions, {**environment, **config.publish_rate_settings().to_env()}
        )
        self.url = self._build_url(self.http_function)
        self.bus, self.eventbridge_function = self._build_event_bus(functions, environment)
        for function in (self.http_function, self.eventbridge_function):
            store.grant_store_access(function)

        CfnOutput(self, c.OUTPUT_PUBLISH_URL, key=c.OUTPUT_PUBLISH_URL, value=self.url.url)
        CfnOutput(self, c.OUTPUT_EVENT_BUS, key=c.OUTPUT_EVENT_BUS, value=self.bus.event_bus_name)

    def _build_http_function(
        self, functions: PythonFunctionFactory, environment: dict[str, str]
    ) -> lambda_.Function:
        return functions.function(
            self,
            "HttpPublisher",
            handler=c.HANDLER_PUBLISH_HTTP,
            description="POST /events (one or a batch), GET /events replay; IAM-authenticated Function URL",
            environment=environment,
            timeout=Duration.seconds(c.PUBLISH_TIMEOUT_SECONDS),
            reserved_concurrent_executions=self._config.publish_reserved_concurrency,
        )

    def _build_url(self, function: lambda_.Function) -> lambda_.FunctionUrl:
        # AWS_IAM: callers sign with SigV4 and need lambda:InvokeFunctionUrl and lambda:InvokeFunction.
        return function.add_function_url(auth_type=lambda_.FunctionUrlAuthType.AWS_IAM)

    def _build_event_bus(
        self, functions: PythonFunctionFactory, environment: dict[str, str]
    ) -> tuple[events.EventBus, lambda_.Function]:
        bus = events.EventBus(self, "Bus", event_bus_name=f"streaming-{self._config.name}")
        self.undelivered = failed = sqs.Queue(
            self,
            "UndeliveredEvents",
            enforce_ssl=True,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            retention_period=Duration.days(14),
            removal_policy=removal_policy(self._config),
        )
        function = functions.function(
            self,
            "EventBridgePublisher",
            handler=c.HANDLER_PUBLISH_EVENTBRIDGE,
            description="Publishes events routed from the custom event bus",
            environment=environment,
            timeout=Duration.seconds(c.PUBLISH_TIMEOUT_SECONDS),
            dead_letter_queue=failed,
            retry_attempts=2,
        )
        events.Rule(
            self,
            "ProducerEvents",
            event_bus=bus,
            description="Every known event type on the bus goes to the publish code",
            event_pattern=events.EventPattern(detail_type=sorted(self._config.event_types)),
            targets=[
                targets.LambdaFunction(
                    function, dead_letter_queue=failed, retry_attempts=8, max_event_age=Duration.hours(2)
                )
            ],
        )
        return bus, function
