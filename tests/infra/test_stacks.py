"""Every environment synthesized: snapshots, targeted assertions, cdk-nag and cfn-lint."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import App
from aws_cdk.assertions import Annotations, Match, Template
from pydantic import ValidationError
from syrupy.extensions.json import JSONSnapshotExtension

from app import build_app
from stacks import nag, public_layers
from stacks.config import ENVIRONMENTS, ROOT, load
from stacks.constructs.lambda_code import ARCHITECTURE, RUNTIME
from stacks.streaming_stack import StreamingStack
from streaming import constants as c
from streaming.constants import HANDLER_PROBE, SSE_START_SCRIPT
from tests.infra.templates import as_list
from tools.preflight import MIN_BOOTSTRAP_VERSION

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("synth")]
ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def normalized(template: dict) -> dict:
    """Asset hashes change with any code edit; the snapshot tracks infrastructure only."""
    return json.loads(ASSET_HASH.sub("<asset-hash>", json.dumps(template)))


def test_one_stack_per_environment_named_after_it(synthesized):
    assert sorted(stack.stack_name for stack in synthesized.assembly.stacks) == sorted(
        f"Streaming-{name}" for name in ENVIRONMENTS
    )


def test_template_snapshot(synthesized, environment, snapshot):
    assert normalized(synthesized.template(environment)) == snapshot(extension_class=JSONSnapshotExtension)


def test_every_table_has_ttl_on_the_replay_window_attribute(synthesized, environment):
    tables = synthesized.assertions(environment).find_resources("AWS::DynamoDB::GlobalTable")
    assert tables
    for table in tables.values():
        assert table["Properties"]["TimeToLiveSpecification"] == {
            "AttributeName": "expires_at",
            "Enabled": True,
        }


def test_prod_tables_are_retained_with_pitr_and_deletion_protection(synthesized):
    for table in synthesized.assertions("prod").find_resources("AWS::DynamoDB::GlobalTable").values():
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
        [replica] = table["Properties"]["Replicas"]
        assert replica["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert replica["DeletionProtectionEnabled"] is True


def test_dev_tables_are_removed_with_the_stack(synthesized):
    for table in synthesized.assertions("dev").find_resources("AWS::DynamoDB::GlobalTable").values():
        assert table["DeletionPolicy"] == "Delete"


def test_publish_url_requires_iam_and_is_an_output(synthesized, environment):
    template = synthesized.assertions(environment)
    template.has_resource_properties("AWS::Lambda::Url", {"AuthType": "AWS_IAM"})
    assert set(template.to_json()["Outputs"]) >= {"PublishUrl", "EventBusName", "EventsTableName"}


def test_every_output_is_a_named_constant(synthesized, environment):
    """The README lists the constants (tests/unit/test_docs.py); outputs-file readers use them."""
    named = {value for name, value in vars(c).items() if name.startswith("OUTPUT_")}
    assert set(synthesized.template(environment)["Outputs"]) == named  # hs256 everywhere: AuthSecretArn too


def test_functions_run_python_313_on_arm64_with_the_powertools_layer(synthesized, environment):
    template = synthesized.template(environment)
    functions = Template.from_json(template).find_resources("AWS::Lambda::Function")
    # two publishers; WebSocket authorizer, route handler, fan-out worker, expiry sweeper; SSE; probe
    assert len(functions) == 8
    config = load(environment)
    # The Powertools layer is the one Powertools' public parameter names for the pinned release.
    [(powertools, parameter)] = [
        (name, parameter)
        for name, parameter in template["Parameters"].items()
        if parameter["Default"].startswith(public_layers.POWERTOOLS_PARAMETER_PREFIX)
    ]
    assert parameter == {
        "Type": "AWS::SSM::Parameter::Value<String>",
        "Default": public_layers.powertools_parameter(config.powertools_version),
    }
    for function in functions.values():
        props = function["Properties"]
        assert (props["Runtime"], props["Architectures"]) == (RUNTIME.name, [ARCHITECTURE.name])
        assert props["TracingConfig"] == {"Mode": "Active"}
        # Powertools first; the SSE function has the Lambda Web Adapter besides (test_sse_stream.py).
        layer, *others = props["Layers"]
        assert layer == {"Ref": powertools}
        assert len(others) == (1 if props["Handler"] == SSE_START_SCRIPT else 0)
        env = props["Environment"]["Variables"]
        if props["Handler"] == HANDLER_PROBE:
            continue  # a client of the service (tests/infra/test_probe.py)
        assert json.loads(env["ROLE_MATRIX"]) == config.roles
        assert env["REPLAY_WINDOW_SECONDS"] == str(config.replay_window_seconds)


def test_the_public_layers_are_for_the_functions_runtime_and_architecture():
    assert (RUNTIME.name, ARCHITECTURE.name) == (public_layers.RUNTIME, public_layers.ARCHITECTURE)


def test_the_reservations_in_the_template_are_the_ones_config_declares(synthesized, environment):
    """What synth warns about and preflight checks is every reservation the stack makes."""
    functions = synthesized.assertions(environment).find_resources("AWS::Lambda::Function")
    reserved = [f["Properties"].get("ReservedConcurrentExecutions", 0) for f in functions.values()]
    assert sum(reserved) == sum(load(environment).reserved_concurrency.values())


def test_preflight_asks_for_the_bootstrap_version_the_templates_check(synthesized, environment):
    rule = synthesized.template(environment)["Rules"]["CheckBootstrapVersion"]
    [assertion] = rule["Assertions"]
    refused, _ = assertion["Assert"]["Fn::Not"][0]["Fn::Contains"]
    assert refused == [str(version) for version in range(1, MIN_BOOTSTRAP_VERSION)]


def test_event_bus_routes_every_event_type_with_a_dead_letter_queue(synthesized, environment):
    template = synthesized.assertions(environment)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {"detail-type": sorted(load(environment).event_types)},
            "Targets": [Match.object_like({"DeadLetterConfig": Match.any_value()})],
        },
    )
    template.has_resource_properties("AWS::Lambda::EventInvokeConfig", {"MaximumRetryAttempts": 2})


def test_cdk_nag_reports_no_unacknowledged_finding(synthesized):
    report = synthesized.validation_report()
    assert report["pluginReports"] == []


def acknowledgements(synthesized) -> list[tuple[str, str, str]]:
    """(construct path, rule, reason) of every cdk-nag acknowledgement in the assembly."""
    return [
        (path, rule.removeprefix("Annotation::"), reason)
        for metadata in synthesized.outdir.glob("*.metadata.json")
        for path, entries in json.loads(metadata.read_text()).items()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for rule, reason in entry["data"].items()
    ]


def test_every_acknowledgement_has_a_reason(synthesized):
    acknowledged = acknowledgements(synthesized)
    assert {rule for _, rule, _ in acknowledged} >= set(nag.REVIEWED)
    assert all(len(reason) >= 20 for _, _, reason in acknowledged)


def test_no_acknowledgement_is_stack_wide(synthesized):
    """A finding acknowledged for a whole stack would let the same finding anywhere else pass unseen."""
    stacks = {f"/{stack.stack_name}" for stack in synthesized.assembly.stacks}
    assert [path for path, _, _ in acknowledgements(synthesized) if path in stacks] == []


def test_the_only_wildcard_resource_granted_is_x_ray_tracing(stack):
    wildcard_actions = {
        action
        for policy in stack.of_type("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "*" in as_list(statement["Resource"])
        for action in as_list(statement["Action"])
    }
    assert wildcard_actions == set(nag.XRAY_WRITE_ACTIONS)


def test_cdk_nag_fails_synth_on_a_finding_nobody_reviewed(monkeypatch, tmp_path):
    monkeypatch.setattr(nag, "REVIEWED", {k: v for k, v in nag.REVIEWED.items() if k != "AwsSolutions-L1"})
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        build_app(App(outdir=str(tmp_path))).synth()
    assert "AwsSolutions-L1" in (tmp_path / "validation-report.json").read_text()


def test_cfn_lint_finds_no_errors(synthesized):
    templates = sorted(str(path) for path in synthesized.outdir.glob("*.template.json"))
    assert len(templates) == len(ENVIRONMENTS)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", *templates],
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stdout.splitlines() if re.search(r":E\d{4}:", line)]
    assert errors == [], result.stdout
    assert result.returncode in (0, 4, 8, 12), result.stderr  # warnings and informational only


def test_synth_refuses_a_region_without_function_urls_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-south-2")
    with pytest.raises(ValidationError, match="region eu-south-2 does not offer Lambda Function URLs"):
        build_app(App(outdir=str(tmp_path)))


def test_synth_warns_when_the_reservations_exceed_the_stated_quota(tmp_path):
    context = copy.deepcopy(json.loads((ROOT / "cdk.json").read_text())["context"]["streaming"])
    context["environments"]["prod"]["concurrency_quota"] = 200
    app = App(outdir=str(tmp_path), context={"aws:cdk:bundling-stacks": []})
    stack = StreamingStack(app, load("prod", context))
    warnings = Annotations.from_stack(stack).find_warning("*", Match.string_like_regexp("concurrency"))
    [warning] = [entry.entry.data for entry in warnings]
    assert "needs an account quota of at least 250, above concurrency_quota 200" in warning
    infos = Annotations.from_stack(stack).find_info("*", Match.string_like_regexp("Region unknown at synth"))
    assert len(infos) == 1  # environment-agnostic: the region is left to make preflight
