"""`make token ROLE=<role> SUB=<user>`: a token the local stack accepts (HS256, locally generated key),
signed with its current key: the one `make rotate-key ENV=local` last made current while the stack runs,
else the key it starts with."""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from local.aws import REGION
from local.state import DEFAULT_DIR, LOCAL_STACK, LocalState
from stacks.config import load
from streaming import constants as c
from streaming.hs256 import SigningKeys, issue_token

# The local moto answers at once or is not running: no waiting, no retries.
_LOCAL_AWS = Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1})


def issue(state: LocalState, role: str, subject: str, ttl_seconds: int = 3600) -> str:
    """Signed like the dev environment's tokens (its issuer, audience and role claim)."""
    config = load("dev")
    if role not in config.roles:
        raise ValueError(f"unknown role {role!r}; known: {sorted(config.roles)}")
    return issue_token(
        current_keys(state),
        audience=config.auth.audience,
        issuer=config.auth.issuer,
        role_claim=config.auth.role_claim,
        subject=subject,
        role=role,
        ttl_seconds=ttl_seconds,
    )


def current_keys(state: LocalState) -> SigningKeys:
    """The keys in the running stack's secret (rotation changes them there), or, when it is not
    running, the key its secret starts with the next time it runs."""
    try:
        outputs = json.loads(state.endpoints_file.read_text())[LOCAL_STACK]
        client = _secrets(outputs["AwsEndpointUrl"])
        secret = client.get_secret_value(SecretId=outputs[c.OUTPUT_AUTH_SECRET_ARN])
    except (FileNotFoundError, EndpointConnectionError, ClientError):  # not running (a stale file)
        return SigningKeys.parse(state.jwt_secret())
    return SigningKeys.parse(secret["SecretString"])


@cache
def _secrets(endpoint_url: str) -> Any:
    return boto3.client(
        "secretsmanager",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="local",  # moto takes any credentials
        aws_secret_access_key="local",  # noqa: S106 - not a secret
        config=_LOCAL_AWS,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", required=True)
    parser.add_argument("--sub", required=True)
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    try:
        print(issue(LocalState(args.state_dir), args.role, args.sub, args.ttl))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
