"""Watch a stack live: events and connection states as lines, through the subscriber (exactly once, in
order, across reconnects).

    .venv/bin/python -m clients.tail --types signal.created,risk.alert --token "$TOKEN"   # any stack
    .venv/bin/python -m clients.tail --role analyst                                     # the local stack
    make tail ROLE=analyst TYPES=signal.created,risk.alert LAST=20

`--role` mints local tokens (the local stack's key in `--state-dir`); a deployed stack needs `--token`.
`--json` prints one JSON object a line. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from clients.subscriber import MAX_LAST, Endpoints, Subscriber, TokenProvider


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", type=Path, help="outputs file (default: the local stack's)")
    parser.add_argument("--state-dir", type=Path, default=Path(".local"), help="the local stack's state")
    parser.add_argument("--types", required=True, help="comma-separated event types")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", help="a token for the stack")
    who.add_argument("--role", help="local stack only: mint tokens for this role")
    parser.add_argument("--transport", choices=["auto", "websocket", "sse"], default="auto")
    parser.add_argument("--last", type=int, default=0, help="first the newest N events (WebSocket)")
    parser.add_argument("--json", action="store_true", help="JSON lines")
    args = parser.parse_args(argv)
    types = {t for t in args.types.split(",") if t}
    if not 0 <= args.last <= MAX_LAST:
        parser.error(f"--last is 0 to {MAX_LAST}")
    endpoints = Endpoints.from_file(args.endpoints or args.state_dir / "endpoints.json")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(endpoints, _tokens(args), types, args.transport, args.json, args.last))


def _tokens(args: argparse.Namespace) -> TokenProvider:
    if args.token:
        token: str = args.token
        return lambda: token
    from local.state import LocalState  # the local stack only
    from local.token import issue

    state = LocalState(args.state_dir)
    return lambda: issue(state, args.role, f"tail-{args.role}")


async def tail(
    endpoints: Endpoints,
    tokens: TokenProvider,
    types: set[str],
    transport: str,
    as_json: bool,
    last: int = 0,
) -> None:
    def say(kind: str, **fields: Any) -> None:
        if as_json:
            print(json.dumps({"kind": kind, **fields}), flush=True)
        elif kind == "event":
            event = fields["event"]
            line = (
                f"{event['ts']} {event['stream']}#{event['seq']} {event['type']} {json.dumps(event['data'])}"
            )
            print(line, flush=True)
        else:
            print(f"-- {kind}: {fields['detail']}", file=sys.stderr, flush=True)

    subscriber = Subscriber(
        endpoints,
        tokens,
        types,
        transport=transport,
        last=last,
        on_state=lambda state: say("state", detail=state),
        on_warning=lambda message: say("warning", detail=message),
    )
    async with subscriber:
        async for event in subscriber:
            say("event", event=event)


if __name__ == "__main__":
    main()
