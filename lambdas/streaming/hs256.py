"""HS256 tokens this deployment issues: its signing keys by kid, kept in one secret (two valid at once
while one is rotated out, docs/operations.md "Rotating the signing key"), the token it signs and the
key that verifies a token.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streaming.auth import AuthError, KeyProvider, KeyUnavailable

# The signing-key secret's text; `fresh` asks past any cache (a key added since may be there).
SecretLoader = Callable[[bool], str]
# The kid of the key a plain-string secret holds: the one the stack generated, before any rotation.
INITIAL_KID = "initial"
UNKNOWN_KEY_REFRESH_SECONDS = 30.0  # an unknown kid rereads the secret at most this often


@dataclass(frozen=True)
class SigningKeys:
    """A deployment's HS256 keys by kid, as its secret holds them:
    `{"current": "<kid>", "keys": {"<kid>": "<secret>", ...}}`. Tokens are signed with the current key
    and name it in their `kid` header; any key listed verifies the tokens that name it, so the previous
    key keeps working until it is retired. A plain-string secret (what the stack generates) is one key,
    `INITIAL_KID`."""

    current: str
    keys: Mapping[str, str]

    @classmethod
    def parse(cls, text: str) -> SigningKeys:
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            return cls(INITIAL_KID, {INITIAL_KID: text})
        current, keys = document.get("current"), document.get("keys")
        if not (
            isinstance(keys, dict)
            and isinstance(current, str)
            and current in keys
            and all(isinstance(kid, str) and isinstance(key, str) and key for kid, key in keys.items())
        ):
            raise ValueError("signing keys: `keys` maps kids to secrets and `current` names one of them")
        return cls(current, dict(keys))

    def dumps(self) -> str:
        return json.dumps({"current": self.current, "keys": dict(self.keys)})

    @property
    def signing_key(self) -> str:
        return self.keys[self.current]

    def verification_key(self, header: Mapping[str, Any]) -> str | None:
        """The key the token's `kid` names. A token without one was issued before kids were: the
        initial key while it is kept, else the current key."""
        kid = header.get("kid")
        if kid is None:
            kid = INITIAL_KID if INITIAL_KID in self.keys else self.current
        return self.keys.get(kid) if isinstance(kid, str) else None

    def rotated(self, kid: str, key: str) -> SigningKeys:
        """`key` added and made current; the others kept, so their tokens verify until retired."""
        if kid in self.keys:
            raise ValueError(f"kid {kid!r} is taken")
        return SigningKeys(kid, {kid: key, **self.keys})

    def retired(self) -> SigningKeys:
        """The current key alone: tokens naming any other are refused from now on."""
        return SigningKeys(self.current, {self.current: self.signing_key})


def issue_token(
    keys: SigningKeys,
    *,
    audience: str,
    issuer: str,
    role_claim: str,
    subject: str,
    role: str,
    ttl_seconds: int,
    now: Callable[[], float] = time.time,
) -> str:
    """An HS256 token as the environment's verifiers expect it, signed with the current key and naming
    it: for the local stack and the probe."""
    import jwt  # on first use, as in streaming.auth

    issued_at = int(now())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        role_claim: role,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    return jwt.encode(claims, keys.signing_key, algorithm="HS256", headers={"kid": keys.current})


def hs256_keys(
    load: SecretLoader,
    *,
    refresh_seconds: float = UNKNOWN_KEY_REFRESH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> KeyProvider:
    """HS256: the key the token's `kid` names, from the secret `load` reads (`SigningKeys`). A kid not
    there rereads the secret past its cache, at most every `refresh_seconds` (forged kids cannot turn
    every request into a read), so a token signed with a key rotated in moments ago verifies at once."""
    refreshed_at = float("-inf")

    def key(header: Mapping[str, Any]) -> str:
        nonlocal refreshed_at
        found = _keys(load(False)).verification_key(header)
        if found is None and clock() - refreshed_at >= refresh_seconds:
            refreshed_at = clock()
            found = _keys(load(True)).verification_key(header)
        if found is None:
            raise AuthError(f"unknown key {str(header.get('kid'))[:64]!r}", "unknown_key")
        return found

    return key


def static_key(secret: str) -> KeyProvider:
    """HS256 keys that do not change: one shared secret, or a `SigningKeys` document."""
    return hs256_keys(lambda _fresh: secret)


def _keys(text: str) -> SigningKeys:
    try:
        return SigningKeys.parse(text)
    except ValueError as error:  # the secret's fault, not the token's: never "malformed token"
        raise KeyUnavailable(str(error)) from None
