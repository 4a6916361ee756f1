"""A synthesized template indexed by what the infra tests ask about (functions by handler, the grants
of each function's role however statements were merged), and a variant synthesized with OIDC tokens."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from stacks.config import ROOT, load
from stacks.streaming_stack import StreamingStack


def flatten(reference: Any) -> str:
    """A CloudFormation value as one string, references in <>, the way cdk-nag shows them."""
    if isinstance(reference, str):
        return reference
    if "Fn::Join" in reference:
        delimiter, parts = reference["Fn::Join"]
        return delimiter.join(flatten(part) for part in parts)
    if "Ref" in reference:
        return f"<{reference['Ref']}>"
    if "Fn::GetAtt" in reference:
        return f"<{reference['Fn::GetAtt'][0]}.{reference['Fn::GetAtt'][1]}>"
    raise AssertionError(f"unexpected reference {reference}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class Stack:
    """One synthesized template, indexed by what the assertions ask about."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.resources = template["Resources"]
        self.outputs = template["Outputs"]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == resource_type}

    def one(self, resource_type: str) -> tuple[str, dict[str, Any]]:
        [(logical_id, resource)] = self.of_type(resource_type).items()
        return logical_id, resource["Properties"]

    def functions(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """handler -> (logical id, properties)"""
        found = {
            fn["Properties"]["Handler"]: (logical_id, fn["Properties"])
            for logical_id, fn in self.of_type("AWS::Lambda::Function").items()
        }
        assert len(found) == len(self.of_type("AWS::Lambda::Function")), "one function per handler"
        return found

    def environment(self, handler: str) -> dict[str, Any]:
        return self.functions()[handler][1]["Environment"]["Variables"]  # type: ignore[no-any-return]

    def statements(self, handler: str) -> list[dict[str, Any]]:
        """The statements of the policies attached to the handler's role."""
        role = self.functions()[handler][1]["Role"]["Fn::GetAtt"][0]
        return [
            statement
            for policy in self.of_type("AWS::IAM::Policy").values()
            if {"Ref": role} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]

    def grants(self, handler: str) -> set[tuple[str, str]]:
        """Every (action, resource) the handler's role is allowed, however statements were merged."""
        allowed = set()
        for statement in self.statements(handler):
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    allowed.add((action, flatten(resource)))
        return allowed

    def table(self, output_key: str) -> str:
        return self.outputs[output_key]["Value"]["Ref"]  # type: ignore[no-any-return]

    @property
    def api(self) -> str:
        return self.one("AWS::ApiGatewayV2::Api")[0]


class OidcInKnownAccount:
    """prod with OIDC tokens, deployed to a known account and region (ARNs then hold literals, which
    the cdk-nag acknowledgements must still match). Bundling is skipped: only the template matters."""

    def __init__(self, outdir: Path) -> None:
        context = copy.deepcopy(json.loads((ROOT / "cdk.json").read_text())["context"]["streaming"])
        context["environments"]["prod"]["auth"] = {
            "mode": "oidc",
            "issuer": "https://idp.example.com/tenant",
            "audience": "streaming",
            "role_claim": "role",
        }
        self.config = load("prod", context)
        app = App(outdir=str(outdir), context={"aws:cdk:bundling-stacks": []})
        StreamingStack(app, self.config, env=Environment(account="123456789012", region="eu-west-1"))
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
        self.outdir = outdir
        self.stack = Stack(app.synth().get_stack_by_name(self.config.stack_name).template)
