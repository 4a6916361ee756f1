"""Any token, on both transports' doors: the `$connect` authorizer and an SSE request. A token is
accepted only when it is right in every way; anything else is refused as invalid_token or
token_expired (never as the server's fault), and a refused SSE request holds no lease.

The tokens: alg `none`, a wrong key, HS/RS confusion (RS256, and HS256 keyed with the RSA public key),
expired, claims missing or of the wrong type, oversized, and mangled."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from streaming import cursor as cursors
from streaming.auth import AuthError, KeyUnavailable, TokenPolicy, TokenVerifier, authorize_connect
from streaming.errors import StreamingError
from streaming.settings import SseSettings
from streaming.sse_plan import StreamRequest, plan_stream
from tests.fuzz.inputs import assert_refused, fuzzed, json_values

pytestmark = pytest.mark.fuzz
SECRET = b"s" * 48
ORIGIN = "https://app.example.com"
ROLES = ["viewer", "analyst", "admin"]
POLICY = TokenPolicy(audience="streaming", issuer="streaming-dev")
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
SIGNERS = ["right", "wrong key", "none", "RS256", "HS256 keyed with the RSA public key", "unsigned"]
SIGNERS += ["garbage"]
SSE = SseSettings(
    poll_interval_ms=500,
    heartbeat_seconds=15,
    max_stream_seconds=600,
    retry_ms=1500,
    compress_above_bytes=8192,
    max_streams_per_subject=3,
    streams_table="connections",
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def signed(claims: dict[str, Any], signer: str, header: dict[str, Any]) -> str:
    """A compact JWS, signed by hand so that any header and any claims can be sent."""
    if signer == "RS256":
        body = f"{b64(json.dumps({**header, 'alg': 'RS256'}).encode())}.{b64(json.dumps(claims).encode())}"
        return f"{body}.{b64(RSA_KEY.sign(body.encode(), padding.PKCS1v15(), hashes.SHA256()))}"
    alg = "none" if signer in ("none", "unsigned") else "HS256"
    body = f"{b64(json.dumps({**header, 'alg': alg}).encode())}.{b64(json.dumps(claims).encode())}"
    if signer in ("none", "unsigned"):
        return body + "." if signer == "none" else body
    key = {"right": SECRET, "wrong key": b"w" * 48}.get(signer, RSA_PUBLIC_PEM)
    return f"{body}.{b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"


@st.composite
def tokens(draw: st.DrawFn) -> tuple[str, bool]:
    """A token, and whether it is right in every way (then it must be accepted)."""
    now = int(time.time())
    good = {
        "iss": "streaming-dev",
        "aud": "streaming",
        "sub": "alice",
        "role": "analyst",
        "exp": now + 3600,
        "iat": now,
    }
    odd = {
        "iss": st.sampled_from(["streaming-dev", "other", ""]) | json_values,
        "aud": st.sampled_from(["streaming", ["streaming", "x"], "other"]) | json_values,
        "sub": st.text(max_size=10) | json_values,
        "role": st.sampled_from([*ROLES, "root", ""]) | json_values,
        # Offsets from now, so that what is drawn does not depend on the clock.
        "exp": st.integers(min_value=-(10**6), max_value=10**6).map(lambda s: now + s)
        | st.sampled_from([-1, 2, 4]).map(lambda s: now + s)
        | st.sampled_from([2**64, -(2**64), "soon", 1e300])
        | json_values,
        "iat": st.integers(min_value=-100, max_value=10**6).map(lambda s: now + s) | json_values,
        "nbf": st.integers(min_value=-100, max_value=10**6).map(lambda s: now + s) | json_values,
    }
    claims = {}
    for name in ["iss", "aud", "sub", "role", "exp", "iat", "nbf"]:
        choice = draw(st.sampled_from(["good", "good", "good", "odd", "missing"]))
        if choice == "good" and name in good:
            claims[name] = good[name]
        elif choice == "odd":
            claims[name] = draw(odd[name])
    if draw(st.booleans()):
        claims["padding"] = "p" * draw(st.sampled_from([10, 20_000]))  # oversized
    header = draw(st.fixed_dictionaries({}, optional={"kid": json_values, "typ": json_values}))
    signer = draw(st.sampled_from(SIGNERS))
    if signer == "garbage":
        return draw(st.text(max_size=300) | st.sampled_from(["a.b.c", "..", "e30.e30.", "x" * 20_000])), False
    token = signed(claims, signer, header)
    if draw(st.integers(0, 9)) == 0 and len(token) > 5:  # a character changed in transit
        spot = draw(st.integers(0, len(token) - 1))
        token = token[:spot] + draw(st.sampled_from("A_-.=+/ ")) + token[spot + 1 :]
        return token, False
    right = signer == "right" and {k: claims.get(k) for k in good if k != "iat"} == {
        k: v for k, v in good.items() if k != "iat"
    }
    fresh = all(isinstance(claims.get(k, 0), int) and claims.get(k, 0) <= now + 20 for k in ("iat", "nbf"))
    plain = all(isinstance(value, str) for value in header.values())  # PyJWT refuses a kid of another type
    return token, right and fresh and plain


def verifier() -> TokenVerifier:
    return TokenVerifier(POLICY, lambda _header: SECRET, ROLES)


def judged(verify: Any, token: str, right: bool) -> AuthError | None:
    """None when accepted; the refusal otherwise. A right token must be accepted."""
    try:
        verify(token)
    except KeyUnavailable as fault:  # the key is always there: a refusal dressed as the server's fault
        raise AssertionError(fault.reason) from None
    except AuthError as refused:
        assert not right, refused.reason
        assert refused.code.code in ("invalid_token", "token_expired")
        assert len(token) < 8 or token not in refused.reason  # a short one may be any word
        return refused
    return None


@fuzzed(1.5)
@given(token=tokens())
def test_a_token_is_accepted_only_when_right_in_every_way(inputs, token):
    inputs.tried("token")
    raw, right = token
    refused = judged(verifier().verify, raw, right)
    if refused is None:  # accepted: then it really was right, or right but for claims PyJWT ignores
        claims = jwt.decode(
            raw, SECRET, algorithms=["HS256"], audience="streaming", issuer="streaming-dev", leeway=30
        )
        assert claims["role"] in ROLES


headers = st.fixed_dictionaries(
    {},
    optional={
        "Origin": st.sampled_from([ORIGIN, ORIGIN + "/", "https://evil.example", "", "null"]),
        "Sec-WebSocket-Protocol": st.sampled_from(["streaming.v1", "", "token.", ","]),
        "Authorization": st.sampled_from(["Bearer", "Bearer ", "Basic x", "bearer"]),
    },
)


@fuzzed(1.5)
@given(token=tokens(), where=st.sampled_from(["subprotocol", "bearer", "query"]), headers=headers)
def test_the_connect_authorizer_allows_only_a_right_token_from_an_allowed_origin(
    inputs, token, where, headers
):
    inputs.tried("$connect authorizer")
    raw, right = token
    event: dict[str, Any] = {"headers": dict(headers), "queryStringParameters": {}, "methodArn": "arn:x"}
    if where == "subprotocol":
        event["headers"]["Sec-WebSocket-Protocol"] = f"streaming.v1, token.{raw}"
    elif where == "bearer":
        event["headers"]["Authorization"] = f"Bearer {raw}"
    else:
        event["queryStringParameters"]["token"] = raw
    policy, refused = authorize_connect(event, verifier(), [ORIGIN])
    (statement,) = policy["policyDocument"]["Statement"]
    if refused is None:
        assert statement["Effect"] == "Allow" and policy["context"]["role"] in ROLES
    else:
        assert statement["Effect"] == "Deny" and policy["context"] == {}
        assert refused.code.code in ("invalid_token", "token_expired", "origin_not_allowed")
        assert len(raw) < 8 or raw not in json.dumps(policy)
    origin_ok = headers.get("Origin") in (None, ORIGIN, ORIGIN + "/")
    simple = " " not in raw and "," not in raw and raw.strip() == raw
    if right and origin_ok and simple and where == "query":
        assert refused is None


class Leases:
    """Open streams per subject, in memory."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}

    def acquire(self, subject: str, limit: int, seconds: float, *, role: str, replaceable_after: float):
        if self.held.get(subject, 0) >= limit:
            return None
        self.held[subject] = self.held.get(subject, 0) + 1
        return f"lease-{subject}-{self.held[subject]}"


TYPE_NAMES = ["signal.created", "risk.alert", "system.status", "decision.made", "order.filled", "", " "]
query_strings = st.lists(
    st.tuples(
        st.sampled_from(["types", "cursor", "token", "types", "x"]) | st.text(max_size=8),
        st.lists(st.sampled_from(TYPE_NAMES) | st.text(max_size=12), max_size=4).map(",".join)
        | st.sampled_from(["c1.", "c1.e30", cursors.encode({"market": 1}), cursors.encode({"market": 99})])
        | st.text(max_size=40),
    ),
    max_size=5,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
resumes = (
    st.none()
    | st.sampled_from(
        ["", cursors.encode({"market": 5}), cursors.encode({"market": 6}), cursors.encode({"ops": 0})]
    )
    | st.text(max_size=60)
    | st.text(max_size=60).map(lambda t: "c1." + t)
    | json_values.map(lambda v: "c1." + b64(json.dumps(v).encode()))
)


@fuzzed(1.5)
@given(
    query=query_strings,
    last_event_id=resumes,
    token=tokens(),
    origin=st.sampled_from([None, ORIGIN, "https://evil.example"]),
)
def test_an_sse_request_is_planned_or_refused_with_its_code_and_a_refusal_holds_no_lease(
    settings, inputs, query, last_event_id, token, origin
):
    inputs.tried("sse request")
    asked = dict(QueryParams(query))  # as the SSE app reads its query
    raw, _ = token
    leases = Leases()
    request = StreamRequest(
        origin=origin,
        token=asked.get("token", raw),
        types=asked.get("types", ""),
        resume=last_event_id or asked.get("cursor"),
    )
    try:
        planned = plan_stream(
            request,
            verifier=verifier(),
            allowed_origins=[ORIGIN],
            roles=settings.roles,
            streams_by_type=settings.streams_by_type,
            heads=lambda: {"market": 5, "risk": 2, "ops": 0},
            leases=leases,
            settings=SSE,
        )
    except StreamingError as refused:
        assert_refused(refused.to_body()["error"], refused.status)
        assert leases.held == {}
    else:
        assert leases.held == {planned.subject: 1}
        assert planned.plan.types <= settings.roles.allowed(planned.plan.role)
        assert all(seq <= {"market": 5, "risk": 2, "ops": 0}[s] for s, seq in planned.plan.position.items())
