"""Client tokens: the environment's verification settings and, in `hs256` mode, the generated signing
key. Both token verifiers (the WebSocket `$connect` authorizer and the SSE app) get them from here."""

from __future__ import annotations

from typing import cast

from aws_cdk import Acknowledgment, CfnElement, CfnOutput, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.config import EnvironmentConfig
from stacks.constructs.removal import removal_policy
from streaming import constants as c

# The key was created inside the WebSocket API construct; a new logical id would replace it, and every
# token signed with it would stop verifying, so it keeps the one it was created with.
SIGNING_KEY_LOGICAL_ID = "WebSocketApiTokenSigningKey289ABABD"


class TokenAuth(Construct):
    def __init__(self, scope: Construct, construct_id: str, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        self.signing_key = self._build_signing_key() if config.auth.mode == "hs256" else None
        if self.signing_key is not None:
            CfnOutput(
                self,
                c.OUTPUT_AUTH_SECRET_ARN,
                key=c.OUTPUT_AUTH_SECRET_ARN,
                value=self.signing_key.secret_arn,
            )

    def environment(self) -> dict[str, str]:
        """What a token verifier reads (streaming.settings.AuthSettings)."""
        secret_arn = self.signing_key.secret_arn if self.signing_key is not None else ""
        return self._config.auth_settings(secret_arn).to_env()

    def grant_verify(self, function: lambda_.Function) -> None:
        """Read the signing key (hs256); nothing to grant for oidc, whose keys are public."""
        self._grant_read_key(function)

    def grant_sign(self, function: lambda_.Function) -> None:
        """Read the signing key, to issue tokens (the synthetic probe; hs256 only)."""
        self._grant_read_key(function)

    def _grant_read_key(self, function: lambda_.Function) -> None:
        if self.signing_key is not None:
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue"], resources=[self.signing_key.secret_arn]
                )
            )

    def _build_signing_key(self) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "TokenSigningKey",
            description=f"HS256 key that signs and verifies streaming client tokens ({self._config.name})",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
            removal_policy=removal_policy(self._config),
        )
        cast(CfnElement, secret.node.default_child).override_logical_id(SIGNING_KEY_LOGICAL_ID)
        Validations.of(secret).acknowledge(
            Acknowledgment(
                id="AwsSolutions-SMG4",
                reason="Rotated deliberately, not on a schedule: `make rotate-key` (docs/operations.md, "
                '"Rotating the signing key") adds a new key and keeps the previous one verifying until '
                "the tokens it signed expire",
            )
        )
        return secret
