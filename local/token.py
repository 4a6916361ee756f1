"""`make token ROLE=<role> SUB=<user>`: a token the local stack accepts (HS256, locally generated secret)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jwt

from local.state import DEFAULT_DIR, LocalState
from stacks.config import load


def issue(state: LocalState, role: str, subject: str, ttl_seconds: int = 3600) -> str:
    """Signed like the dev environment's tokens (its issuer, audience and role claim)."""
    config = load("dev")
    if role not in config.roles:
        raise ValueError(f"unknown role {role!r}; known: {sorted(config.roles)}")
    now = int(time.time())
    claims = {
        "iss": config.auth.issuer,
        "aud": config.auth.audience,
        "sub": subject,
        config.auth.role_claim: role,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, state.jwt_secret(), algorithm="HS256")


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
