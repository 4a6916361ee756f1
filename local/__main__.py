"""`make run`: the local stack on loopback, running the deployed handler modules unchanged.

Starts moto (DynamoDB, EventBridge) and the publish endpoint, creates the table and bus the stack
declares, writes .local/endpoints.json (the keys of the deployed stack's outputs) and prints the URLs.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from pathlib import Path

import boto3
import uvicorn

from local.aws import REGION, create_events_table, start_moto
from local.state import DEFAULT_DIR, LOCAL_STACK, LocalState
from stacks.config import load
from streaming import constants as c

TABLE = "streaming-local-events"
BUS = "streaming-local"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--moto-port", type=int, default=4566)
    parser.add_argument("--publish-port", type=int, default=8001)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("the local stack only listens on loopback (127.0.0.0/8 or ::1)")

    state = LocalState(args.state_dir)
    moto, moto_url = start_moto(args.host, args.moto_port)
    settings = load("dev").runtime_settings(TABLE)
    # Everything below runs in this process: the handlers' boto3 clients go to moto.
    os.environ.update(
        AWS_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",  # noqa: S106 - moto accepts any credentials
        AWS_DEFAULT_REGION=REGION,
        POWERTOOLS_TRACE_DISABLED="true",
        **settings.to_env(),
    )
    create_events_table(boto3.client("dynamodb"), TABLE)
    boto3.client("events").create_event_bus(Name=BUS)

    from handlers import publish_http
    from local.lambda_runtime import LocalFunction
    from local.publish_endpoint import publish_app

    publish_socket = _listen(args.host, args.publish_port)
    publish_url = f"http://{_url_host(args.host)}:{publish_socket.getsockname()[1]}/"
    state.write_endpoints(
        {
            c.OUTPUT_PUBLISH_URL: publish_url,
            c.OUTPUT_EVENTS_TABLE: TABLE,
            c.OUTPUT_EVENT_BUS: BUS,
            "Region": REGION,
            "AwsEndpointUrl": moto_url,
        }
    )
    print(f"{LOCAL_STACK} is up (Ctrl-C stops it)", flush=True)
    print(f"  publish API (SigV4, service lambda): {publish_url}", flush=True)
    print(f"  AWS endpoint (moto):                 {moto_url}", flush=True)
    print(f"  endpoints file:                      {state.endpoints_file}", flush=True)
    app = publish_app(LocalFunction("publish-http", publish_http.handler), state.credentials())
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[publish_socket])
    finally:
        moto.shutdown()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    main()
