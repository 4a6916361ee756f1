"""One stack per environment, composed of one construct per feature."""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, CfnOutput, Stack, Tags
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.connection_store import ConnectionStore
from stacks.constructs.dashboard import Dashboard
from stacks.constructs.events_table import EventsTable
from stacks.constructs.lambda_code import PythonFunctionFactory
from stacks.constructs.monitoring import Monitoring
from stacks.constructs.probe import SyntheticProbe
from stacks.constructs.publish_api import PublishApi
from stacks.constructs.sse_stream import SseStream
from stacks.constructs.token_auth import TokenAuth
from stacks.constructs.websocket_api import WebSocketApi
from streaming import constants as c


class StreamingStack(Stack):
    def __init__(self, scope: Construct, config: EnvironmentConfig, **kwargs: Any) -> None:
        super().__init__(
            scope,
            config.stack_name,
            description=f"Real-time event streaming ({config.name}): event store, publish API, "
            "WebSocket API, SSE",
            termination_protection=config.deletion_protection,
            **kwargs,
        )
        Tags.of(self).add("project", "realtime-streaming")
        Tags.of(self).add("environment", config.name)

        store = EventsTable(self, "EventStore", config)  # the construct id keeps the table's logical id
        connections = ConnectionStore(self, "ConnectionStore", config)
        auth = TokenAuth(self, "TokenAuth", config)
        functions = PythonFunctionFactory(self, "Functions", config)
        live = WebSocketApi(
            self,
            "WebSocketApi",
            config=config,
            functions=functions,
            store=store,
            connections=connections,
            auth=auth,
        )
        publish = PublishApi(self, "PublishApi", config=config, functions=functions, store=store)
        for publisher in (publish.http_function, publish.eventbridge_function):
            live.attach_publisher(publisher)
        sse = SseStream(
            self,
            "SseStream",
            config=config,
            functions=functions,
            store=store,
            connections=connections,
            auth=auth,
            websocket_url=live.stage.url,
        )
        probe = SyntheticProbe.where_possible(
            self,
            "Probe",
            config=config,
            functions=functions,
            auth=auth,
            live=live,
            sse=sse,
            publish=publish,
        )

        monitored_functions = {
            "PublishHttp": publish.http_function,
            "PublishEventBridge": publish.eventbridge_function,
            "RouteHandler": live.route_handler,
            "ConnectAuthorizer": live.authorizer,
            "FanoutWorker": live.fanout_worker,
            "ExpirySweeper": live.sweeper,
            "Sse": sse.function,
            **({"Probe": probe.function} if probe is not None else {}),
        }
        monitored_tables = {"Events": store.table, "Connections": connections.table}
        monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            functions=monitored_functions,
            tables=monitored_tables,
            undelivered=publish.undelivered,
            probe=probe,
        )
        Dashboard(
            self,
            "Dashboard",
            config=config,
            functions=monitored_functions,
            tables=monitored_tables,
            websocket_stage=live.stage,
            undelivered=publish.undelivered,
            alarms=[monitoring.degraded, *monitoring.alarms],
        )

        CfnOutput(self, c.OUTPUT_EVENTS_TABLE, key=c.OUTPUT_EVENTS_TABLE, value=store.table.table_name)
        self._note_what_synth_cannot_check(config)

    def _note_what_synth_cannot_check(self, config: EnvironmentConfig) -> None:
        """The region was checked when the configuration loaded, if it is known; the account's real
        concurrency quota only `make preflight` can read."""
        warning = config.concurrency_quota_warning()
        if warning:
            Annotations.of(self).add_warning_v2("streaming:concurrency-quota", warning)
        if config.region is None:
            Annotations.of(self).add_info(
                "Region unknown at synth (an environment-agnostic stack): whether it offers Function URLs "
                f"and the public layers is checked by `make preflight ENV={config.name}`"
            )
