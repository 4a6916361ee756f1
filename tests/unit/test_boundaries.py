"""The layout's rules, checked on the source: what runs in Lambda never imports the stacks, the CDK or
the emulator; the domain builds no AWS client or executor (the composition root does); the unit tests
run without the emulator; and no Lambda module grows past a size one can read at once."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 300


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def calls(path: Path) -> set[str]:
    """Dotted names called in the module: `boto3.client`, `ThreadPoolExecutor`, ..."""
    called: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            called.add(ast.unparse(node.func))
    return called


def test_lambda_code_never_imports_the_stacks_the_cdk_or_the_emulator():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported(path) & {"stacks", "aws_cdk", "constructs", "local"})
        for path in modules("lambdas")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_domain_builds_no_aws_client_or_executor():
    building = {"boto3.client", "boto3.resource", "boto3.session.Session", "ThreadPoolExecutor"}
    offenders = {
        str(path.relative_to(ROOT)): sorted(calls(path) & building) for path in modules("lambdas/streaming")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_unit_tests_run_without_the_emulator():
    assert [str(path.relative_to(ROOT)) for path in modules("tests/unit") if "local" in imported(path)] == []


def test_no_lambda_module_is_longer_than_one_can_read_at_once():
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in modules("lambdas")}
    assert {path: lines for path, lines in lengths.items() if lines > MAX_MODULE_LINES} == {}
