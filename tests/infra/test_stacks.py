"""Every environment synthesized: snapshots, targeted assertions, cdk-nag and cfn-lint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match
from syrupy.extensions.json import JSONSnapshotExtension

from app import build_app
from stacks import nag
from stacks.config import ENVIRONMENTS, load
from streaming.constants import HANDLER_PROBE, SSE_START_SCRIPT

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


def test_functions_run_python_313_on_arm64_with_the_powertools_layer(synthesized, environment):
    functions = synthesized.assertions(environment).find_resources("AWS::Lambda::Function")
    # two publishers; WebSocket authorizer, route handler, fan-out worker, expiry sweeper; SSE; probe
    assert len(functions) == 8
    config = load(environment)
    for function in functions.values():
        props = function["Properties"]
        assert (props["Runtime"], props["Architectures"]) == ("python3.13", ["arm64"])
        assert props["TracingConfig"] == {"Mode": "Active"}
        # Powertools first; the SSE function has the Lambda Web Adapter besides (test_sse_stream.py).
        layer, *others = props["Layers"]
        assert f"AWSLambdaPowertoolsPythonV3-python313-arm64:{config.powertools_layer_version}" in json.dumps(
            layer
        )
        assert len(others) == (1 if props["Handler"] == SSE_START_SCRIPT else 0)
        env = props["Environment"]["Variables"]
        if props["Handler"] == HANDLER_PROBE:
            continue  # a client of the service (tests/infra/test_probe.py)
        assert json.loads(env["ROLE_MATRIX"]) == config.roles
        assert env["REPLAY_WINDOW_SECONDS"] == str(config.replay_window_seconds)


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


def test_every_acknowledgement_has_a_reason(synthesized):
    acknowledged = [
        (rule, reason)
        for path in synthesized.outdir.glob("*.metadata.json")
        for entries in json.loads(path.read_text()).values()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for rule, reason in entry["data"].items()
    ]
    assert {rule.removeprefix("Annotation::") for rule, _ in acknowledged} >= set(nag.REVIEWED)
    assert all(len(reason) >= 20 for _, reason in acknowledged)


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
