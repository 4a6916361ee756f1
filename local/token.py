"""`make token ROLE=<role> SUB=<user>`: a token the local stack accepts (HS256, locally generated secret)."""

from __future__ import annotations

import argparse
from pathlib import Path

from local.state import DEFAULT_DIR, LocalState
from stacks.config import load
from streaming.auth import issue_token


def issue(state: LocalState, role: str, subject: str, ttl_seconds: int = 3600) -> str:
    """Signed like the dev environment's tokens (its issuer, audience and role claim)."""
    config = load("dev")
    if role not in config.roles:
        raise ValueError(f"unknown role {role!r}; known: {sorted(config.roles)}")
    return issue_token(
        state.jwt_secret(),
        audience=config.auth.audience,
        issuer=config.auth.issuer,
        role_claim=config.auth.role_claim,
        subject=subject,
        role=role,
        ttl_seconds=ttl_seconds,
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
