"""Publish to the running local stack: `python -m local.publish < events.json` (one event or a batch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from botocore.credentials import Credentials

from clients.publisher import PublishClient, PublishError
from local.state import DEFAULT_DIR, LocalState


def local_client(state: LocalState) -> PublishClient:
    """A client signing with the local publisher identity, for the URL in the endpoints file."""
    creds = state.credentials()
    return PublishClient.from_endpoints(
        state.endpoints_file, credentials=Credentials(creds.access_key_id, creds.secret_access_key)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    try:
        result = local_client(LocalState(args.state_dir)).publish(json.load(sys.stdin))
    except PublishError as error:
        print(json.dumps(error.body, indent=2), file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
