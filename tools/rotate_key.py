"""Rotates the HS256 signing keys of a deployed stack or of the local stack (docs/operations.md,
"Rotating the signing key"). Secrets are never printed, only their kids.

    make rotate-key ENV=dev                 # rotate: a new key, current from now on; the previous kept
    make rotate-key ENV=dev ACTION=retire   # later: every key but the current one removed
    make rotate-key ENV=dev ACTION=show     # which kids verify, and which one signs
    make rotate-key ENV=local               # the running `make run` stack (.local/endpoints.json)

The secret is found by the `AuthSecretArn` output in the outputs file (`cdk deploy --outputs-file`, or
the local stack's endpoints file, whose `AwsEndpointUrl` then points the calls at its moto), or given
as `--secret-arn`. Deployed secrets are changed with your AWS credentials.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

from streaming import constants as c
from streaming.hs256 import SigningKeys

ACTIONS = ("rotate", "retire", "show")


def new_kid() -> str:
    """When it was made, readable in a token's header, and a suffix for two rotations in a second."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def read_keys(client: Any, secret_arn: str) -> SigningKeys:
    return SigningKeys.parse(client.get_secret_value(SecretId=secret_arn)["SecretString"])


def rotate(client: Any, secret_arn: str) -> SigningKeys:
    """A new key, current from now on; the keys before it keep verifying their tokens."""
    keys = read_keys(client, secret_arn).rotated(new_kid(), secrets.token_urlsafe(48))
    client.put_secret_value(SecretId=secret_arn, SecretString=keys.dumps())
    return keys


def retire(client: Any, secret_arn: str) -> SigningKeys:
    """Every key but the current one removed: tokens signed with them are refused from now on
    (by each verifier once its cached copy of the secret expires)."""
    keys = read_keys(client, secret_arn)
    if len(keys.keys) > 1:
        keys = keys.retired()
        client.put_secret_value(SecretId=secret_arn, SecretString=keys.dumps())
    return keys


def describe(keys: SigningKeys) -> str:
    others = sorted(set(keys.keys) - {keys.current})
    return f"signing with {keys.current}; also verifying: {', '.join(others) if others else 'none'}"


def secret_location(outputs_file: Path, stack: str) -> tuple[str, str | None]:
    """The secret's ARN and, for the local stack, the endpoint of its moto."""
    outputs: dict[str, dict[str, str]] = json.loads(outputs_file.read_text())
    if stack not in outputs:
        raise ValueError(f"{outputs_file} has no stack {stack!r}; it has {sorted(outputs)}")
    values = outputs[stack]
    if c.OUTPUT_AUTH_SECRET_ARN not in values:
        raise ValueError(f"{stack} has no {c.OUTPUT_AUTH_SECRET_ARN}: its tokens are not HS256 (oidc)")
    return values[c.OUTPUT_AUTH_SECRET_ARN], values.get("AwsEndpointUrl")


def secrets_client(secret_arn: str, endpoint_url: str | None = None) -> Any:
    region = secret_arn.split(":")[3]  # arn:partition:secretsmanager:region:account:secret:name
    if endpoint_url is None:
        return boto3.client("secretsmanager", region_name=region)
    return boto3.client(  # the local stack's moto takes any credentials
        "secretsmanager",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - not a secret
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=ACTIONS)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--outputs", type=Path, help="a `cdk deploy --outputs-file` file or endpoints.json")
    where.add_argument("--secret-arn", help="the signing-key secret itself")
    parser.add_argument("--stack", default="Streaming-dev", help="the stack in the outputs file")
    args = parser.parse_args(argv)
    try:
        secret_arn, endpoint_url = (
            (args.secret_arn, None) if args.secret_arn else secret_location(args.outputs, args.stack)
        )
    except (OSError, ValueError) as error:
        parser.error(str(error))
    client = secrets_client(secret_arn, endpoint_url)
    before = read_keys(client, secret_arn)
    keys = {"rotate": rotate, "retire": retire}.get(args.action, read_keys)(client, secret_arn)
    if args.action == "retire" and keys == before:
        print("nothing to retire: the current key is the only one")
    print(describe(keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
