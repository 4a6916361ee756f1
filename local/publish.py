"""Publish to the running local stack: `python -m local.publish < events.json` (one event or a batch).

Exit status: 0 published, 1 the stack refused the events (its error on stderr), 2 nothing was sent:
the input is not one JSON event or a list of them, or the stack is not running (no endpoints file, or
nothing listening at its publish URL). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import httpx
from botocore.credentials import Credentials

from clients.publisher import PublishClient, PublishError
from local.state import DEFAULT_DIR, LocalState

USAGE_ERROR = 2


def local_client(state: LocalState, *, rate_limit_wait: float = 0.0) -> PublishClient:
    """A client signing with the local publisher identity, for the URL in the endpoints file."""
    creds = state.credentials()
    return PublishClient.from_endpoints(
        state.endpoints_file,
        credentials=Credentials(creds.access_key_id, creds.secret_access_key),
        rate_limit_wait=rate_limit_wait,
    )


def read_events(text: str) -> dict[str, Any] | list[dict[str, Any]]:
    """One event (a JSON object) or a batch (a JSON array); ValueError saying what is wrong otherwise."""
    if not text.strip():
        raise ValueError("no input: pipe one event (a JSON object) or a list of them to stdin")
    try:
        events = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"stdin is not JSON ({error})") from None
    if not isinstance(events, dict | list):
        raise ValueError(f"expected one event (a JSON object) or a list of them, not {type(events).__name__}")
    return events


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    state = LocalState(args.state_dir)
    try:
        events = read_events(sys.stdin.read())
    except ValueError as error:
        _fail(str(error))
    # Checked before the credentials, which would otherwise be created in a directory that is not a stack's.
    if not state.endpoints_file.is_file():
        _fail(f"{state.endpoints_file} not found: start the local stack (make run) or pass its --state-dir")
    try:
        url = next(iter(json.loads(state.endpoints_file.read_text()).values()))["PublishUrl"]
        client = local_client(state)
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration) as error:
        _fail(f"{state.endpoints_file} is not a local stack's endpoints file ({type(error).__name__})")
    try:
        result = client.publish(events)
    except PublishError as error:
        print(json.dumps(error.body, indent=2), file=sys.stderr)
        raise SystemExit(1) from None
    except httpx.TransportError as error:
        reason = str(error) or type(error).__name__
        _fail(f"cannot reach the publish API at {url} ({reason}); is make run running?")
    except ValueError:  # an answer that is not JSON: something else listens at that port
        _fail(f"{url} did not answer as the local stack's publish API; is make run running?")
    print(json.dumps(result, indent=2))


def _fail(message: str) -> NoReturn:
    print(f"local.publish: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


if __name__ == "__main__":
    main()
