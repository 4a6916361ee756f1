"""The live page (clients/web/live/, docs/browser.md), served by the local stack from its own loopback
origin, which the stack allows for WebSocket and SSE. Besides the static files (the whole of
clients/web/, so the page imports ../streaming.js as any page would), a few local-only routes:

- `GET /local/config`: the endpoints and the role matrix the page offers;
- `GET /local/token?role=analyst[&ttl=seconds]`: a token for the role, minted as `make token` mints
  them (local/token.py). Only the local stack, which holds the signing key, can do this: a deployed
  stack has no such route; a page there gets its tokens from the identity provider;
- `POST /local/gateway/stop` and `/start`: stops the WebSocket gateway (its port refuses connections)
  and starts it again on the same port, to watch clients ride an outage;
- `GET /metrics`: the functions' metrics in Prometheus text format (local.prometheus), for a local
  Prometheus to scrape;
- `GET /local/debug`: this process's asyncio tasks, threads and open connections (local.serving's
  `process_report`; the gateway answers the same path for its own process), for the soak run.

Requests must name a loopback host (no DNS rebinding); the POSTs, when they come from a browser, must
come from the page itself (no cross-site form posting).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from local.gateway import GatewayProcess
from local.prometheus import CONTENT_TYPE
from local.serving import DEBUG_PATH, LOOPBACK_NAMES, process_report
from local.state import LocalState
from local.token import issue

WEB = Path(__file__).resolve().parent.parent / "clients" / "web"
PAGE_PATH = "/live/"
METRICS_PATH = "/metrics"
MIN_TTL_SECONDS, MAX_TTL_SECONDS = 10, 3600


def page_origins(host: str, port: int) -> list[str]:
    """The origins a browser gives the page: as served, and by name when served on 127.0.0.1."""
    origins = [f"http://{host}:{port}"]
    if host == "127.0.0.1":
        origins.append(f"http://localhost:{port}")
    return origins


def live_page_app(
    state: LocalState,
    *,
    websocket_url: str,
    sse_url: str,
    roles: Mapping[str, Sequence[str]],
    gateway: GatewayProcess,
    origins: Sequence[str],
    metrics: Callable[[], str],
) -> Starlette:
    async def config(request: Request) -> Response:
        grants = {role: list(types) for role, types in roles.items()}
        return _private({"websocketUrl": websocket_url, "sseUrl": sse_url, "roles": grants})

    async def token(request: Request) -> Response:
        role = request.query_params.get("role", "")
        if role not in roles:
            return JSONResponse({"error": f"role is one of {sorted(roles)}"}, status_code=400)
        try:
            ttl = int(request.query_params.get("ttl", MAX_TTL_SECONDS))
        except ValueError:
            ttl = 0
        if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
            return JSONResponse(
                {"error": f"ttl is {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS} seconds"}, status_code=400
            )
        # A subject per token: the SSE stream limit per subject then never stands between page loads.
        subject = f"live-{role}-{secrets.token_hex(4)}"
        return _private({"token": issue(state, role, subject, ttl), "role": role, "sub": subject})

    async def switch_gateway(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin not in origins:
            return JSONResponse({"error": "only the live page may do this"}, status_code=403)
        action = {"start": gateway.start, "stop": gateway.stop}.get(request.path_params["action"])
        if action is None:
            return JSONResponse({"error": "start or stop"}, status_code=404)
        await asyncio.to_thread(action)  # stopping waits for the process to end (a few seconds)
        return _private({"running": gateway.running})

    async def gateway_state(request: Request) -> Response:
        return _private({"running": gateway.running})

    async def exposition(request: Request) -> Response:
        return PlainTextResponse(metrics(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    async def debug(request: Request) -> Response:
        return _private(process_report())

    async def home(request: Request) -> Response:
        return RedirectResponse(PAGE_PATH)

    return Starlette(
        routes=[
            Route("/", home),
            Route("/local/config", config),
            Route("/local/token", token),
            Route("/local/gateway", gateway_state),
            Route("/local/gateway/{action:str}", switch_gateway, methods=["POST"]),
            Route(METRICS_PATH, exposition),
            Route(DEBUG_PATH, debug),
            Mount("/", StaticFiles(directory=WEB, html=True)),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_loopback_hosts_only)],
    )


async def _loopback_hosts_only(request: Request, call_next: RequestResponseEndpoint) -> Response:
    if (urlsplit(f"//{request.headers.get('host', '')}").hostname or "") not in LOOPBACK_NAMES:
        return JSONResponse({"error": "the live page answers loopback host names only"}, status_code=421)
    return await call_next(request)


def _private(body: object) -> Response:
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
