"""The docs are checked against the code: generated event docs, every error code, the two commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import fastjsonschema
import pytest

from stacks.config import REGIONS_WITHOUT_FUNCTION_URLS
from streaming import constants
from streaming.errors import ErrorCode
from tests.conftest import example
from tools.events_doc import DOC, ENVELOPE_SCHEMA, render

ROOT = Path(__file__).resolve().parents[2]
validate_envelope = fastjsonschema.compile(json.loads(ENVELOPE_SCHEMA.read_text()))


def test_events_doc_is_generated_from_the_current_schemas():
    assert DOC.read_text() == render(), "run: .venv/bin/python -m tools.events_doc"


def test_every_example_in_the_events_doc_is_a_valid_envelope_with_valid_data(settings):
    blocks = re.findall(r"Example:\n\n```json\n(.*?)\n```", DOC.read_text(), re.S)
    assert len(blocks) == len(settings.streams_by_type)
    for block in blocks:
        envelope = json.loads(block)
        validate_envelope(envelope)
        settings.catalog.validate_data(envelope["type"], envelope["schema_version"], envelope["data"])
        assert envelope["stream"] == settings.streams_by_type[envelope["type"]]


def test_stored_envelopes_match_the_documented_envelope_schema(store, settings):
    from streaming.events import parse_new_event

    raws = [{**example(t, settings), "key": "CH0012032048"} for t in settings.streams_by_type]
    store.append([parse_new_event(r, settings.catalog, settings.max_event_bytes) for r in raws], "producer-x")
    page = store.after({}, frozenset(settings.streams_by_type), 100)
    assert len(page.events) == len(raws)
    for envelope in page.events:
        validate_envelope(envelope.to_dict())


def test_an_envelope_with_an_undocumented_field_fails_the_schema():
    envelope = json.loads(re.findall(r"```json\n(.*?)\n```", DOC.read_text(), re.S)[0])
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate_envelope({**envelope, "priority": 1})


def test_every_error_code_is_documented():
    http = (ROOT / "docs" / "publishing.md").read_text()
    websocket = (ROOT / "docs" / "protocol.md").read_text()
    for error in ErrorCode:
        documented_for_http = re.search(rf"\| `{error.code}` \| {error.status} \|", http)
        assert documented_for_http or f"| `{error.code}` |" in websocket, error.code


def test_every_protocol_action_and_answer_is_documented():
    from streaming import protocol

    doc = (ROOT / "docs" / "protocol.md").read_text()
    for action in protocol.ACTIONS:
        assert f"| `{action}` |" in doc, action


def test_readme_gives_the_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_lists_every_stack_output():
    from streaming import constants

    readme = (ROOT / "README.md").read_text()
    listed = readme[readme.index("Outputs: ") :].split("\n\n")[0]
    keys = [value for name, value in vars(constants).items() if name.startswith("OUTPUT_")]
    assert keys and [key for key in keys if f"`{key}`" not in listed] == []


def test_readme_says_where_the_state_dir_puts_the_endpoints_file_and_secrets():
    readme = (ROOT / "README.md").read_text()
    assert "--state-dir" in readme and "endpoints.json" in readme


def test_the_envelope_doc_says_encoding_comes_over_sse_as_well_as_websocket():
    # What each transport does: tests/integration/test_contract_gaps.py (large events over both).
    [row] = [line for line in DOC.read_text().splitlines() if line.startswith("| `encoding` |")]
    assert "WebSocket" in row and "SSE" in row


def test_the_readme_lists_every_stack_output():
    outputs = next(p for p in (ROOT / "README.md").read_text().split("\n\n") if p.startswith("Outputs:"))
    keys = {value for name, value in vars(constants).items() if name.startswith("OUTPUT_")}
    assert {key for key in keys if f"`{key}`" not in outputs} == set()


def test_the_first_deploy_checklist_names_the_regions_synth_and_preflight_refuse():
    readme = (ROOT / "README.md").read_text()
    checklist = readme[readme.index("### First deploy into a new account") :]
    region_item = checklist[: checklist.index("2. **Account.**")]
    assert set(re.findall(r"`([a-z]{2}-[a-z]+-\d)`", region_item)) == REGIONS_WITHOUT_FUNCTION_URLS
    assert "make preflight ENV=" in readme
