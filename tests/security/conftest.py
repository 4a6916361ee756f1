"""The security suite reuses the infra fixtures (one synthesized app) and the local stack's helpers."""

from tests.infra.conftest import environment, oidc, stack, synthesized

__all__ = ["environment", "oidc", "stack", "synthesized"]
