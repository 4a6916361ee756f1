"""`make run`: the local stack on loopback, running the deployed handler modules unchanged.

Starts moto (DynamoDB, EventBridge, Secrets Manager), creates the tables, bus and signing secret the
stack declares, then serves the publish endpoint (with the publish and fan-out functions), the SSE
app (under uvicorn, as in Lambda) and Lambda's Invoke API (the fan-out worker and the EventBridge
function, which moto's bus cannot invoke) here and the WebSocket gateway (with the WebSocket
functions) in a process of its own, writes endpoints.json in the state directory (.local/ unless
--state-dir says otherwise; the keys of the deployed stack's outputs and a few local ones) and prints
the URLs. It runs the `dev` environment's configuration from cdk.json. The live page (local.live_page,
docs/browser.md) is served from an origin of its own, which the stack allows; so is `/metrics`, the
metrics every function here and in the gateway printed, in Prometheus text format (local.prometheus).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import boto3

from local import console
from local.aws import REGION, start_moto
from local.gateway import STAGE, GatewayProcess
from local.lambda_runtime import (
    LocalFunction,
    function_app,
    function_url_cors,
    invoke_app,
    isolate_invocations,
)
from local.live_page import METRICS_PATH, PAGE_PATH, live_page_app, page_origins
from local.prometheus import Registry
from local.serving import listen, serve, url_host
from local.state import DEFAULT_DIR, LOCAL_STACK, LocalCredentials, LocalState
from stacks.config import load
from stacks.table_layouts import CONNECTIONS, EVENTS, create_table
from streaming import constants as c
from streaming.environment import limits
from streaming.settings import DeliverySettings

TABLE = "streaming-local-events"
CONNECTIONS_TABLE = "streaming-local-connections"
BUS = "streaming-local"
SECRET = "streaming-local-token-key"  # noqa: S105 - the name of the secret
FANOUT_WORKER = "streaming-local-fanout"
SSE_FUNCTION = "sse"
# Invoked through the local Lambda endpoint (LambdaEndpointUrl) with EventBridge's events: moto's bus
# has no Lambda target.
EVENTBRIDGE_FUNCTION = "streaming-local-publish-eventbridge"
# The handlers' identity: moto takes any credentials, the gateway checks @connections signatures.
HANDLER_CREDENTIALS = LocalCredentials("local", "local")
CONCURRENCY = 4  # execution environments per WebSocket and fan-out function
SWEEP_SECONDS = 5.0  # the deployed sweeper runs every minute; locally sooner, so expiry shows quickly


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--moto-port", type=int, default=4566)
    parser.add_argument("--publish-port", type=int, default=8001)
    parser.add_argument("--websocket-port", type=int, default=8002)
    parser.add_argument("--sse-port", type=int, default=8003)
    parser.add_argument("--live-port", type=int, default=8000, help="the live page (its origin is allowed)")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument(
        "--fanout-chunk-connections",
        type=int,
        help="audience size above which chunks go to the fan-out worker (default: cdk.json's dev value)",
    )
    parser.add_argument(
        "--publish-rate",
        type=float,
        nargs=2,
        metavar=("EVENTS_PER_SECOND", "BURST"),
        help="every HTTP publisher's rate and burst (default: cdk.json's dev value)",
    )
    parser.add_argument(
        "--sse-max-stream-seconds", type=int, help="end SSE streams sooner (default: cdk.json's dev value)"
    )
    parser.add_argument(
        "--sse-timeout-seconds",
        type=int,
        help="the SSE function's timeout (default: cdk.json's dev value); below --sse-max-stream-seconds, "
        "streams run into it and are cut without an end, as by Lambda",
    )
    parser.add_argument("--sse-heartbeat-seconds", type=int, help="default: cdk.json's dev value")
    parser.add_argument("--sse-poll-interval-ms", type=int, help="default: cdk.json's dev value")
    parser.add_argument(
        "--sse-poll",
        action="store_true",
        help="SSE streams poll the store instead of relaying from the WebSocket API (as with sse.push off)",
    )
    parser.add_argument(
        "--sse-push-url",
        metavar="URL",
        help="where SSE streams relay from (default: this stack's WebSocket API); streams that cannot "
        "connect there poll the store",
    )
    parser.add_argument(
        "--coalesce-above-events",
        type=int,
        help="the overload signal's threshold: events pending for one subscriber above which superseded "
        "ones are coalesced by key (default: cdk.json's dev value)",
    )
    parser.add_argument(
        "--websocket-connection-limit-seconds",
        type=int,
        default=c.WEBSOCKET_CONNECTION_LIMIT_SECONDS,
        help="the gateway closes every connection this long after it opened (API Gateway: 2 hours); "
        "connections expire, after a reconnect notice, one sweep before",
    )
    parser.add_argument(
        "--websocket-idle-timeout-seconds",
        type=int,
        default=c.WEBSOCKET_IDLE_TIMEOUT_SECONDS,
        help="the gateway closes a connection whose client sent nothing for this long (API Gateway: 10 min)",
    )
    parser.add_argument(
        "--sweep-seconds",
        type=float,
        default=SWEEP_SECONDS,
        help="how often the expiry sweeper runs (deployed: every minute)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also allow this browser origin (scheme://host:port), besides cdk.json's dev origins",
    )
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("the local stack only listens on loopback (127.0.0.0/8 or ::1)")
    # As deployed: a connection expires one sweep before the gateway's cut, so the sweep closes it.
    max_connection_seconds = min(
        c.MAX_CONNECTION_SECONDS, int(args.websocket_connection_limit_seconds - args.sweep_seconds)
    )
    shortest = limits(DeliverySettings, "max_connection_seconds")["ge"]
    if max_connection_seconds < shortest:
        parser.error(
            f"--websocket-connection-limit-seconds must leave {shortest} s or more after --sweep-seconds"
        )
    registry = Registry()  # what the handlers of both processes print, for /metrics
    console.install(registry.observe)

    state = LocalState(args.state_dir)
    moto, moto_url = start_moto(args.host, args.moto_port)
    publish_socket = listen(args.host, args.publish_port)
    gateway_socket = listen(args.host, args.websocket_port)
    sse_socket = listen(args.host, args.sse_port)
    live_socket = listen(args.host, args.live_port)
    lambda_socket = listen(args.host, 0)  # Lambda's Invoke API, for the fan-out hand-off
    host = url_host(args.host)
    publish_url = f"http://{host}:{publish_socket.getsockname()[1]}/"
    gateway_url = f"http://{host}:{gateway_socket.getsockname()[1]}"
    websocket_url = f"ws://{host}:{gateway_socket.getsockname()[1]}/"
    sse_url = f"http://{host}:{sse_socket.getsockname()[1]}/"
    lambda_url = f"http://{host}:{lambda_socket.getsockname()[1]}"
    live_origins = page_origins(host, live_socket.getsockname()[1])
    live_url = live_origins[0] + PAGE_PATH
    metrics_url = live_origins[0] + METRICS_PATH

    # The handlers' boto3 clients go to moto, and Lambda's Invoke API (the fan-out hand-off) here.
    os.environ.update(
        AWS_ENDPOINT_URL=moto_url,
        AWS_ENDPOINT_URL_LAMBDA=lambda_url,
        AWS_ACCESS_KEY_ID=HANDLER_CREDENTIALS.access_key_id,
        AWS_SECRET_ACCESS_KEY=HANDLER_CREDENTIALS.secret_access_key,
        AWS_DEFAULT_REGION=REGION,
        POWERTOOLS_TRACE_DISABLED="true",
    )
    dynamodb = boto3.client("dynamodb")
    create_table(dynamodb, TABLE, EVENTS)
    create_table(dynamodb, CONNECTIONS_TABLE, CONNECTIONS)
    boto3.client("events").create_event_bus(Name=BUS)
    secret_arn = boto3.client("secretsmanager").create_secret(Name=SECRET, SecretString=state.jwt_secret())[
        "ARN"
    ]
    config = load("dev")
    origins = list(dict.fromkeys([*config.allowed_origins, *live_origins, *args.allow_origin]))
    config = config.model_validate({**config.model_dump(), "allowed_origins": origins})
    delivery = config.delivery_settings(CONNECTIONS_TABLE, f"{gateway_url}/{STAGE}", FANOUT_WORKER)
    delivery = replace(delivery, max_connection_seconds=max_connection_seconds)
    if args.fanout_chunk_connections:
        delivery = replace(delivery, fanout_chunk_connections=args.fanout_chunk_connections)
    publish_rate = config.publish_rate_settings()
    if args.publish_rate:
        publish_rate = replace(publish_rate, rate=args.publish_rate[0], burst=int(args.publish_rate[1]))
    sse = config.sse_settings(CONNECTIONS_TABLE, "" if args.sse_poll else args.sse_push_url or websocket_url)
    if args.sse_max_stream_seconds:
        sse = replace(sse, max_stream_seconds=args.sse_max_stream_seconds)
    if args.sse_heartbeat_seconds:
        sse = replace(sse, heartbeat_seconds=args.sse_heartbeat_seconds)
    if args.sse_poll_interval_ms:
        sse = replace(sse, poll_interval_ms=args.sse_poll_interval_ms)
    runtime = config.runtime_settings(TABLE)
    if args.coalesce_above_events:
        runtime = replace(runtime, coalesce_above_events=args.coalesce_above_events)
    os.environ.update(  # one environment for every local function: the deployed ones each get a part
        {
            **runtime.to_env(),
            **publish_rate.to_env(),
            **delivery.to_env(),
            **config.auth_settings(secret_arn).to_env(),
            **sse.to_env(),
        }
    )

    from sse.app import app as sse_app  # the same app the SSE function runs behind the adapter

    from handlers import fanout_worker, publish_eventbridge, publish_http
    from local.publish_endpoint import publish_app

    isolate_invocations()
    sse_function = function_url_cors(
        function_app(
            sse_app,
            SSE_FUNCTION,
            memory_mb=config.sse.memory_mb,
            timeout_seconds=args.sse_timeout_seconds or config.sse.timeout_seconds,
        ),
        config.sse_cors(),
    )

    publisher = publish_app(LocalFunction("publish-http", publish_http.handler), state.credentials())
    worker = LocalFunction(
        FANOUT_WORKER,
        fanout_worker.handler,
        timeout_seconds=c.FANOUT_TIMEOUT_SECONDS,
        concurrency=CONCURRENCY,
    )
    eventbridge = LocalFunction(
        EVENTBRIDGE_FUNCTION, publish_eventbridge.handler, timeout_seconds=c.PUBLISH_TIMEOUT_SECONDS
    )
    # The gateway process inherits this environment and its listening socket.
    gateway = GatewayProcess(
        gateway_socket,
        [
            "--host",
            f"{host}:{gateway_socket.getsockname()[1]}",
            "--concurrency",
            str(CONCURRENCY),
            "--sweep-seconds",
            str(args.sweep_seconds),
            "--connection-limit-seconds",
            str(args.websocket_connection_limit_seconds),
            "--idle-timeout-seconds",
            str(args.websocket_idle_timeout_seconds),
        ],
        on_metrics=registry.observe,
    )
    gateway.start()
    live_page = live_page_app(
        state,
        websocket_url=websocket_url,
        sse_url=f"{sse_url}events",
        roles=config.roles,
        gateway=gateway,
        origins=live_origins,
        metrics=registry.exposition,
    )
    state.write_endpoints(
        {
            c.OUTPUT_PUBLISH_URL: publish_url,
            c.OUTPUT_WEBSOCKET_URL: websocket_url,
            c.OUTPUT_SSE_URL: sse_url,
            c.OUTPUT_EVENTS_TABLE: TABLE,
            c.OUTPUT_CONNECTIONS_TABLE: CONNECTIONS_TABLE,
            c.OUTPUT_EVENT_BUS: BUS,
            c.OUTPUT_AUTH_SECRET_ARN: secret_arn,
            "Region": REGION,
            "AwsEndpointUrl": moto_url,
            "LambdaEndpointUrl": lambda_url,
            "EventBridgeFunctionName": EVENTBRIDGE_FUNCTION,
            "LivePageUrl": live_url,
            "MetricsUrl": metrics_url,
        }
    )
    print(f"{LOCAL_STACK} is up (Ctrl-C stops it)", flush=True)
    print(f"  publish API (SigV4, service lambda): {publish_url}", flush=True)
    print(f"  WebSocket API:                       {websocket_url}", flush=True)
    print(f"  SSE:                                 {sse_url}events", flush=True)
    print(f"  AWS endpoint (moto):                 {moto_url}", flush=True)
    print(f"  Lambda Invoke API (EventBridge fn):  {lambda_url}", flush=True)
    print(f"  live page (pick a role):             {live_url}", flush=True)
    print(f"  metrics (Prometheus text format):    {metrics_url}", flush=True)
    print(f"  endpoints file:                      {state.endpoints_file}", flush=True)
    print("  a token: make token ROLE=viewer SUB=alice", flush=True)
    # Everything loaded so far (moto's and botocore's models) lives as long as the process: keep it
    # out of the garbage collector's full passes, which otherwise stall requests by 100 ms and more.
    gc.freeze()
    # Outside `serve` (which stops the servers on a signal), a SIGTERM unwinds through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            lambda_api = invoke_app({FANOUT_WORKER: worker, EVENTBRIDGE_FUNCTION: eventbridge})
            asyncio.run(
                serve(
                    (publisher, publish_socket),
                    (sse_function, sse_socket),
                    (lambda_api, lambda_socket),
                    (live_page, live_socket),
                    # The gateway first: fan-out posts still running then fail at once, as to an API
                    # that is gone, instead of waiting for their timeouts (or a fault's hang).
                    on_stop=gateway.stop,
                )
            )
    finally:
        gateway.stop()
        moto.shutdown()


if __name__ == "__main__":
    main()
