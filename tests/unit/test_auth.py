"""Token verification, origin check, token extraction and redaction."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from streaming.auth import (
    AuthError,
    KeyUnavailable,
    TokenPolicy,
    TokenVerifier,
    authorize_connect,
    jwks_keys,
    origin_allowed,
    redact,
    token_from_request,
)
from streaming.hs256 import INITIAL_KID, SigningKeys, hs256_keys, issue_token, static_key

pytestmark = pytest.mark.connections
SECRET = "s" * 48
POLICY = TokenPolicy(audience="streaming", issuer="streaming-dev")
ROLES = ("viewer", "analyst", "approver", "admin")


def token(secret: str = SECRET, algorithm: str = "HS256", headers=None, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": "streaming-dev", "aud": "streaming", "sub": "alice", "role": "analyst", "exp": now + 600}
    claims.update(overrides)
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None}, secret, algorithm=algorithm, headers=headers
    )


def reason(verifier: TokenVerifier, value: str | None) -> str:
    with pytest.raises(AuthError) as refused:
        verifier.verify(value)
    return refused.value.reason


def test_a_valid_token_gives_subject_role_and_expiry():
    principal = TokenVerifier(POLICY, static_key(SECRET), ROLES).verify(token())
    assert (principal.subject, principal.role) == ("alice", "analyst")
    assert principal.expires_at > time.time()


@pytest.mark.parametrize(("seconds_left", "accepted"), [(-60, False), (-5, False), (2, False), (5, True)])
def test_expiry_is_strict_with_three_seconds_to_spare(seconds_left, accepted):
    verifier = TokenVerifier(POLICY, static_key(SECRET), ROLES)
    value = token(exp=int(time.time()) + seconds_left)
    if accepted:
        assert verifier.verify(value).subject == "alice"
    else:
        assert reason(verifier, value) == "token expired"


@pytest.mark.parametrize("exp", ["9999999999", 10**400], ids=["a string", "too large"])
def test_an_exp_that_is_not_a_number_is_refused_as_malformed(exp):
    assert reason(TokenVerifier(POLICY, static_key(SECRET), ROLES), token(exp=exp)) in (
        "malformed token (exp)",
        "malformed token (DecodeError)",
    )


def test_a_token_from_an_issuer_clock_further_ahead_than_the_leeway_is_not_yet_valid():
    ahead = int(time.time()) + 120
    assert reason(TokenVerifier(POLICY, static_key(SECRET), ROLES), token(iat=ahead, nbf=ahead)) == (
        "token not yet valid"
    )


def test_an_issuer_clock_ahead_by_less_than_the_leeway_is_accepted():
    ahead = int(time.time()) + 20
    assert (
        TokenVerifier(POLICY, static_key(SECRET), ROLES).verify(token(iat=ahead, nbf=ahead)).role == "analyst"
    )


@pytest.mark.parametrize(
    ("make", "expected", "kind"),
    [
        (lambda: None, "no token", "missing"),
        (lambda: "", "no token", "missing"),
        (lambda: "not.a.jwt", "malformed token (DecodeError)", "malformed"),
        (lambda: token(secret="x" * 48), "bad signature", "signature"),
        (lambda: token(exp=int(time.time()) - 120), "token expired", "expired"),
        (lambda: token(aud="someone-else"), "wrong audience", "audience"),
        (lambda: token(iss="https://evil.example"), "wrong issuer", "issuer"),
        (lambda: token(sub=None), "missing claim sub", "claims"),
        (lambda: token(exp=None), "missing claim exp", "claims"),
        (lambda: token(role="superuser"), "role claim 'role' missing or not a known role", "role"),
        (lambda: token(role=None), "role claim 'role' missing or not a known role", "role"),
        # Found by the fuzz suite: an unhashable role claim escaped as a TypeError (a 500).
        (lambda: token(role=["admin"]), "role claim 'role' missing or not a known role", "role"),
        (lambda: token(role={"admin": 1}), "role claim 'role' missing or not a known role", "role"),
        (
            lambda: jwt.encode({"sub": "x"}, None, algorithm="none"),
            "algorithm 'none' not accepted",
            "algorithm",
        ),
    ],
)
def test_refusals_say_why_without_the_token(make, expected, kind):
    """`reason` for the audit log; `kind`, one of a few fixed words, for the metric's dimension."""
    value = make()
    with pytest.raises(AuthError) as refused:
        TokenVerifier(POLICY, static_key(SECRET), ROLES).verify(value)
    assert (refused.value.reason, refused.value.kind) == (expected, kind)
    assert not value or value not in refused.value.reason


def test_the_role_claim_name_is_configurable():
    policy = TokenPolicy(audience="streaming", issuer="streaming-dev", role_claim="custom:role")
    verifier = TokenVerifier(policy, static_key(SECRET), ROLES)
    assert verifier.verify(token(**{"custom:role": "admin", "role": None})).role == "admin"


# -- HS256 keys by kid, and their rotation ---------------------------------------------------------------

OLD, NEW = "a" * 48, "b" * 48


def minted(keys: SigningKeys, ttl_seconds: int = 600) -> str:
    return issue_token(
        keys,
        audience="streaming",
        issuer="streaming-dev",
        role_claim="role",
        subject="alice",
        role="analyst",
        ttl_seconds=ttl_seconds,
    )


class Secret:
    """The signing-key secret as a verifier reads it: a cached copy, reread when asked for `fresh`."""

    def __init__(self, keys: SigningKeys) -> None:
        self.stored = self.cached = keys.dumps()
        self.fresh_reads = 0

    def put(self, keys: SigningKeys) -> None:
        self.stored = keys.dumps()

    def load(self, fresh: bool) -> str:
        if fresh:
            self.fresh_reads += 1
            self.cached = self.stored
        return self.cached

    def expire_cache(self) -> None:
        self.cached = self.stored


def test_a_token_names_the_current_key_and_is_verified_with_the_key_it_names():
    keys = SigningKeys("old", {"old": OLD}).rotated("new", NEW)
    value = minted(keys)
    assert jwt.get_unverified_header(value)["kid"] == "new"
    assert jwt.decode(value, NEW, algorithms=["HS256"], audience="streaming")["sub"] == "alice"
    assert TokenVerifier(POLICY, static_key(keys.dumps()), ROLES).verify(value).subject == "alice"


def test_a_token_signed_with_the_old_key_is_accepted_during_the_overlap_and_refused_after_it():
    secret = Secret(SigningKeys("old", {"old": OLD}))
    verifier = TokenVerifier(POLICY, hs256_keys(secret.load), ROLES)
    before = minted(SigningKeys.parse(secret.stored))

    secret.put(SigningKeys.parse(secret.stored).rotated("new", NEW))
    after = minted(SigningKeys.parse(secret.stored))
    assert verifier.verify(after).subject == "alice"  # its kid is new to the verifier: it rereads
    assert verifier.verify(before).subject == "alice"  # the overlap: both keys verify

    secret.put(SigningKeys.parse(secret.stored).retired())
    secret.expire_cache()
    with pytest.raises(AuthError) as refused:
        verifier.verify(before)
    assert (refused.value.reason, refused.value.kind) == ("unknown key 'old'", "unknown_key")
    assert verifier.verify(after).subject == "alice"


def test_an_unknown_kid_is_refused_and_rereads_the_secret_at_most_every_30_seconds():
    now = [1000.0]
    secret = Secret(SigningKeys("k1", {"k1": OLD}))
    verifier = TokenVerifier(POLICY, hs256_keys(secret.load, clock=lambda: now[0]), ROLES)
    forged = token(secret=NEW, headers={"kid": "k9"})
    for _ in range(5):
        assert reason(verifier, forged) == "unknown key 'k9'"
    assert secret.fresh_reads == 1
    now[0] += 30
    assert reason(verifier, forged) == "unknown key 'k9'"
    assert secret.fresh_reads == 2


def test_a_kid_of_a_listed_key_with_a_signature_of_another_is_a_bad_signature():
    keys = SigningKeys("k1", {"k1": OLD, "k2": NEW})
    forged = token(secret=NEW, headers={"kid": "k1"})
    assert reason(TokenVerifier(POLICY, static_key(keys.dumps()), ROLES), forged) == "bad signature"


def test_a_plain_string_secret_is_the_initial_key_and_tokens_without_a_kid_keep_it_until_it_is_retired():
    """What the stack generates, and every token issued before kids were, keep working through the
    first rotation."""
    plain = SigningKeys.parse(OLD)
    assert (plain.current, plain.keys) == (INITIAL_KID, {INITIAL_KID: OLD})
    without_kid = token(secret=OLD)
    rotated = plain.rotated("k2", NEW)
    assert TokenVerifier(POLICY, static_key(rotated.dumps()), ROLES).verify(without_kid).subject == "alice"
    retired = TokenVerifier(POLICY, static_key(rotated.retired().dumps()), ROLES)
    assert reason(retired, without_kid) == "bad signature"  # the current key, which did not sign it
    assert retired.verify(token(secret=NEW)).subject == "alice"


@pytest.mark.parametrize(
    "document",
    [{"current": "k2", "keys": {"k1": OLD}}, {"current": "k1", "keys": {"k1": ""}}, {"keys": []}],
    ids=["current not listed", "empty key", "keys not a map"],
)
def test_a_malformed_key_document_is_the_servers_fault_not_the_tokens(document):
    with pytest.raises(KeyUnavailable) as refused:
        TokenVerifier(POLICY, static_key(json.dumps(document)), ROLES).verify(token())
    assert refused.value.kind == "key_unavailable"


def test_rotating_to_a_kid_already_listed_is_refused():
    with pytest.raises(ValueError, match="taken"):
        SigningKeys("k1", {"k1": OLD}).rotated("k1", NEW)


@pytest.fixture
def jwks_server():
    """An OIDC issuer's JWKS endpoint on loopback."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "key-1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield private, f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
    server.shutdown()


def test_oidc_tokens_are_verified_with_the_issuers_jwks(jwks_server):
    private, url = jwks_server
    policy = TokenPolicy(audience="streaming", issuer="streaming-dev", algorithms=("RS256",))
    verifier = TokenVerifier(policy, jwks_keys(url), ROLES)
    good = token(secret=private, algorithm="RS256", headers={"kid": "key-1"})
    assert verifier.verify(good).role == "analyst"
    assert reason(verifier, token(secret=private, algorithm="RS256", headers={"kid": "key-9"})).startswith(
        "signing key unavailable"
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (
        reason(verifier, token(secret=other, algorithm="RS256", headers={"kid": "key-1"})) == "bad signature"
    )
    assert reason(verifier, token()) == "algorithm 'HS256' not accepted"  # no downgrade to HMAC


def test_origins_are_matched_exactly_and_absent_origins_are_not_browsers():
    allowed = ["https://app.example.com", "http://localhost:8000"]
    assert origin_allowed("https://app.example.com", allowed)
    assert origin_allowed("https://app.example.com/", allowed)
    assert origin_allowed(None, allowed)
    assert not origin_allowed("https://app.example.com.evil.net", allowed)
    assert not origin_allowed("http://app.example.com", allowed)
    assert not origin_allowed("null", allowed)


def test_the_token_comes_from_the_subprotocol_then_bearer_then_query():
    headers = {"Sec-WebSocket-Protocol": "streaming.v1, token.abc.def.ghi", "Authorization": "Bearer zzz"}
    assert token_from_request(headers, {"token": "qqq"}) == ("abc.def.ghi", "streaming.v1")
    assert token_from_request({"authorization": "bearer zzz"}, {"token": "qqq"}) == ("zzz", None)
    assert token_from_request({}, {"token": "qqq"}) == ("qqq", None)
    assert token_from_request({}, {}) == (None, None)


def test_redaction_hides_every_token_like_parameter():
    redacted = redact("cursor=c1.abc&token=eyJsecret&types=risk.alert&access_token=xyz")
    assert "eyJsecret" not in redacted and "xyz" not in redacted
    assert "cursor=c1.abc" in redacted and "token=[redacted]" in redacted
    assert redact({"Token": "t", "limit": "5"}) == "Token=[redacted]&limit=5"


def connect_event(headers=None, query=None):
    """An API Gateway WebSocket $connect REQUEST authorizer event."""
    return {
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:eu-central-1:123456789012:abc123/prod/$connect",
        "headers": {"Host": "abc123.execute-api.eu-central-1.amazonaws.com", **(headers or {})},
        "queryStringParameters": query,
        "requestContext": {
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "connectionId": "Zx1=",
            "identity": {"sourceIp": "203.0.113.7"},
        },
    }


def test_connect_is_allowed_with_the_principal_in_the_context():
    verifier = TokenVerifier(POLICY, static_key(SECRET), ROLES)
    answer, refusal = authorize_connect(
        connect_event(
            {"Origin": "https://app.example.com", "Sec-WebSocket-Protocol": f"streaming.v1, token.{token()}"}
        ),
        verifier,
        ["https://app.example.com"],
    )
    assert refusal is None
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert answer["context"]["role"] == "analyst" and answer["principalId"] == "alice"


@pytest.mark.parametrize(
    ("headers", "query", "expected", "kind"),
    [
        ({"Origin": "https://evil.example"}, {"token": "x"}, "origin not allowed", "origin"),
        ({"Origin": "https://app.example.com"}, None, "no token", "missing"),
        ({}, {"token": "garbage"}, "malformed token (DecodeError)", "malformed"),
    ],
)
def test_connect_is_denied_with_an_auditable_reason(headers, query, expected, kind):
    verifier = TokenVerifier(POLICY, static_key(SECRET), ROLES)
    answer, refusal = authorize_connect(connect_event(headers, query), verifier, ["https://app.example.com"])
    assert refusal is not None and (refusal.reason, refusal.kind) == (expected, kind)
    assert answer["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert answer["context"] == {}
