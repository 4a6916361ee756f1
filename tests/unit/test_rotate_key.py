"""`make rotate-key` (tools.rotate_key) against moto's Secrets Manager, and the verifiers of the
deployed functions (the composition root's secret loader, cached by Powertools) following it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from handlers import composition
from stacks.config import load
from streaming import constants as c
from streaming.auth import AuthError, TokenPolicy, TokenVerifier
from streaming.hs256 import INITIAL_KID, SigningKeys, hs256_keys, issue_token
from tools import rotate_key

pytestmark = pytest.mark.connections
GENERATED = "g" * 64  # what the stack's SecretStringGenerator leaves in the secret: one plain string
POLICY = TokenPolicy(audience="streaming", issuer="streaming-dev")


@pytest.fixture
def secret() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="streaming-dev-token-key", SecretString=GENERATED)["ARN"]
        parameters.clear_caches()
        yield client, arn
        parameters.clear_caches()


def token(keys: SigningKeys) -> str:
    return issue_token(
        keys,
        audience="streaming",
        issuer="streaming-dev",
        role_claim="role",
        subject="alice",
        role="viewer",
        ttl_seconds=600,
    )


def stored(client: Any, arn: str) -> dict[str, Any]:
    return json.loads(client.get_secret_value(SecretId=arn)["SecretString"])  # type: ignore[no-any-return]


def test_rotate_turns_the_generated_secret_into_two_keys_the_new_one_current(secret):
    client, arn = secret
    keys = rotate_key.rotate(client, arn)
    document = stored(client, arn)
    assert document["current"] == keys.current != INITIAL_KID
    assert document["keys"][INITIAL_KID] == GENERATED
    assert len(document["keys"][keys.current]) >= 64


def test_a_second_rotation_keeps_every_key_until_retire_keeps_the_current_one_only(secret):
    client, arn = secret
    first = rotate_key.rotate(client, arn)
    second = rotate_key.rotate(client, arn)
    assert set(stored(client, arn)["keys"]) == {INITIAL_KID, first.current, second.current}
    retired = rotate_key.retire(client, arn)
    assert stored(client, arn) == {"current": second.current, "keys": {second.current: second.signing_key}}
    assert retired == second.retired()
    assert rotate_key.retire(client, arn) == retired  # nothing left to retire: unchanged


def test_the_deployed_verifier_accepts_both_keys_during_the_overlap_and_only_the_new_one_after_retire(secret):
    client, arn = secret
    verifier = TokenVerifier(POLICY, hs256_keys(composition._secret_loader(arn)), ["viewer"])
    before = token(rotate_key.read_keys(client, arn))
    assert verifier.verify(before).subject == "alice"  # the plain secret is now in Powertools' cache

    rotate_key.rotate(client, arn)
    after = token(rotate_key.read_keys(client, arn))
    assert jwt.get_unverified_header(before)["kid"] == INITIAL_KID != jwt.get_unverified_header(after)["kid"]
    assert verifier.verify(after).subject == "alice"  # a kid not cached yet: read again at once
    assert verifier.verify(before).subject == "alice"

    rotate_key.retire(client, arn)
    parameters.clear_caches()  # SECRET_MAX_AGE_SECONDS later
    with pytest.raises(AuthError) as refused:
        verifier.verify(before)
    assert refused.value.kind == "unknown_key"
    assert verifier.verify(after).subject == "alice"


def test_the_probe_signs_with_the_current_key(secret, monkeypatch):
    client, arn = secret
    keys = rotate_key.rotate(client, arn)
    config = load("dev")
    settings = {
        **config.auth_settings(arn).to_env(),
        **config.probe_settings("wss://w", "https://s", "https://p").to_env(),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    composition.probe_settings.cache_clear()
    try:
        value = composition.probe_token()
    finally:
        composition.probe_settings.cache_clear()
    assert jwt.get_unverified_header(value)["kid"] == keys.current
    assert jwt.decode(value, keys.signing_key, algorithms=["HS256"], audience=config.auth.audience)


def test_the_secret_is_found_by_the_outputs_file_and_the_local_stack_s_by_its_moto(tmp_path):
    deployed = tmp_path / "outputs-dev.json"
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:key-AbCdEf"
    deployed.write_text(json.dumps({"Streaming-dev": {c.OUTPUT_AUTH_SECRET_ARN: arn}}))
    assert rotate_key.secret_location(deployed, "Streaming-dev") == (arn, None)
    assert rotate_key.secrets_client(arn).meta.region_name == "eu-west-1"
    local = tmp_path / "endpoints.json"
    local.write_text(
        json.dumps(
            {"Streaming-local": {c.OUTPUT_AUTH_SECRET_ARN: arn, "AwsEndpointUrl": "http://127.0.0.1:4566"}}
        )
    )
    assert rotate_key.secret_location(local, "Streaming-local") == (arn, "http://127.0.0.1:4566")
    with pytest.raises(ValueError, match="no stack 'Streaming-prod'"):
        rotate_key.secret_location(deployed, "Streaming-prod")


def test_the_command_prints_kids_never_keys(secret, tmp_path, capsys):
    client, arn = secret
    assert rotate_key.main(["rotate", "--secret-arn", arn]) == 0
    current = rotate_key.read_keys(client, arn)
    printed = capsys.readouterr().out
    assert f"signing with {current.current}; also verifying: {INITIAL_KID}" in printed
    assert rotate_key.main(["retire", "--secret-arn", arn]) == 0
    rotate_key.main(["show", "--secret-arn", arn])
    printed += capsys.readouterr().out
    assert f"signing with {current.current}; also verifying: none" in printed
    assert GENERATED not in printed and current.signing_key not in printed
