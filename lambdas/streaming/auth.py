"""Who is connecting: token verification, origin check and token extraction for the WebSocket and SSE
entry points. Tokens never reach a log: callers log `AuthError.reason` and `redact(...)`ed URLs only.

Two ways to verify, chosen per environment:
- HS256 with keys the stack keeps in Secrets Manager (streaming.hs256: two at once while one is
  rotated out), for tokens this deployment issues;
- an OIDC issuer's JWKS (Cognito or any IdP), for RS256/ES256 tokens the IdP issues.
Audience, issuer, expiry and the role claim (its name is configurable) are checked either way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

from streaming.errors import ErrorCode

SUBPROTOCOL = "streaming.v1"
# Sec-WebSocket-Protocol: streaming.v1, token.<jwt>
TOKEN_SUBPROTOCOL_PREFIX = "token."  # noqa: S105 - a name, not a secret
TOKEN_QUERY_PARAMETER = "token"  # noqa: S105 - a name, not a secret
REDACTED = "[redacted]"
_SECRET_PARAMETERS = frozenset({"token", "access_token", "id_token", "authorization"})
_BEARER = re.compile(r"^Bearer\s+(\S+)$", re.IGNORECASE)

# Given the token's unverified header, the key to verify it with.
KeyProvider = Callable[[Mapping[str, Any]], Any]


class AuthError(Exception):
    """A refused connection. `reason` is safe to log and to audit; it never contains the token.
    `kind` names it in one of a few fixed words, for metrics (a reason may quote the token's header).
    `code` is what an entry point that answers with error codes (SSE) says."""

    code: ClassVar[ErrorCode] = ErrorCode.INVALID_TOKEN

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class TokenExpired(AuthError):
    """Expired, or too close to expiring to be used: the client gets a new token."""

    code = ErrorCode.TOKEN_EXPIRED


class KeyUnavailable(AuthError):
    """The key to verify with could not be had: the server's fault, not the token's."""

    code = ErrorCode.INTERNAL_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "key_unavailable")


class OriginNotAllowed(AuthError):
    code = ErrorCode.ORIGIN_NOT_ALLOWED


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    expires_at: int  # epoch seconds: the server closes the connection then


@dataclass(frozen=True)
class TokenPolicy:
    """What a token must be. Expiry is strict, the same on both transports: a token is accepted only
    while it has at least `min_seconds_left` before its `exp` by the server's clock (a shorter
    connection could not be used). The leeway covers an issuer's clock running ahead: `iat` and
    `nbf` up to that far in the future are accepted."""

    audience: str
    issuer: str
    role_claim: str = "role"
    algorithms: tuple[str, ...] = ("HS256",)
    min_seconds_left: int = 3
    leeway_seconds: int = 30


class TokenVerifier:
    def __init__(self, policy: TokenPolicy, keys: KeyProvider, roles: Iterable[str]) -> None:
        self._policy = policy
        self._keys = keys
        self._roles = frozenset(roles)

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("no token", "missing")
        import jwt  # on first use: PyJWT loads cryptography, which functions that verify nothing skip

        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in self._policy.algorithms:
                raise AuthError(f"algorithm {header.get('alg')!r} not accepted", "algorithm")
            claims = jwt.decode(
                token,
                self._keys(header),
                algorithms=list(self._policy.algorithms),
                audience=self._policy.audience,
                issuer=self._policy.issuer,
                leeway=self._policy.leeway_seconds,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired", "expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong audience", "audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong issuer", "issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature", "signature") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid", "not_yet_valid") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthError(f"missing claim {error.claim}", "claims") from None
        except (jwt.PyJWTError, ValueError) as error:
            raise AuthError(f"malformed token ({type(error).__name__})", "malformed") from None
        expires_at = claims["exp"]
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float) or abs(expires_at) > 2**53:
            raise AuthError("malformed token (exp)", "malformed")  # PyJWT accepts anything int() takes
        if expires_at - time.time() < self._policy.min_seconds_left:
            raise TokenExpired("token expired", "expired")
        role = claims.get(self._policy.role_claim)
        if not isinstance(role, str) or role not in self._roles:  # a list or object is no role either
            raise AuthError(f"role claim {self._policy.role_claim!r} missing or not a known role", "role")
        return Principal(subject=str(claims["sub"]), role=role, expires_at=int(expires_at))


def jwks_keys(jwks_url: str, *, lifespan_seconds: int = 300) -> KeyProvider:
    """OIDC: the issuer's signing key named by the token's `kid`, from its JWKS (cached, refreshed on
    an unknown kid). RS256/ES256 need the `cryptography` package next to PyJWT."""
    import jwt  # on first use, as in verify

    client = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=lifespan_seconds, timeout=3)

    def key(header: Mapping[str, Any]) -> Any:
        kid = header.get("kid")
        if not kid:
            raise AuthError("token names no key (kid)", "malformed")
        try:
            return client.get_signing_key(kid).key
        except jwt.PyJWKClientError as error:
            raise KeyUnavailable(f"signing key unavailable ({type(error).__name__})") from None

    return key


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """Browsers always send Origin; it must be allowed. Clients that send none (servers, tools)
    are not browsers, and authenticate with their token alone."""
    return origin is None or origin.rstrip("/") in {entry.rstrip("/") for entry in allowed}


def token_from_request(headers: Mapping[str, str], query: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The token and the subprotocol to answer with, from `Sec-WebSocket-Protocol` (browsers cannot
    set headers on a WebSocket), `Authorization: Bearer`, or the `token` query parameter, in that order.
    Header names are matched case-insensitively."""
    lowered = {name.lower(): value for name, value in headers.items()}
    offered = [p.strip() for p in lowered.get("sec-websocket-protocol", "").split(",") if p.strip()]
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    for protocol in offered:
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(TOKEN_SUBPROTOCOL_PREFIX) :], subprotocol
    bearer = _BEARER.match(lowered.get("authorization", ""))
    if bearer:
        return bearer.group(1), subprotocol
    return query.get(TOKEN_QUERY_PARAMETER) or None, subprotocol


def redact(query: str | Mapping[str, str]) -> str:
    """A query string fit for logs: token-like parameters replaced by [redacted]."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query.items())
    return urlencode(
        [(name, REDACTED if name.lower() in _SECRET_PARAMETERS else value) for name, value in pairs],
        safe="[]",
    )


def authorize_connect(
    event: Mapping[str, Any], verifier: TokenVerifier, allowed_origins: Iterable[str]
) -> tuple[dict[str, Any], AuthError | None]:
    """Decide an API Gateway WebSocket `$connect` REQUEST authorizer event.

    Returns the IAM policy answer (Allow with the principal in `context`, or Deny) and, when refused,
    why (its reason to audit-log, its kind to count). The token is never part of either."""
    headers = event.get("headers") or {}
    query = event.get("queryStringParameters") or {}
    method_arn = event.get("methodArn", "*")
    origin = next((value for name, value in headers.items() if name.lower() == "origin"), None)
    try:
        if not origin_allowed(origin, allowed_origins):
            raise OriginNotAllowed("origin not allowed", "origin")
        token, _ = token_from_request(headers, query)
        principal = verifier.verify(token)
    except AuthError as refused:
        return _policy("anonymous", "Deny", method_arn, {}), refused
    context = {"sub": principal.subject, "role": principal.role, "exp": principal.expires_at}
    return _policy(principal.subject, "Allow", method_arn, context), None


def _policy(principal_id: str, effect: str, resource: str, context: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
        "context": dict(context),
    }
