"""Counts the inputs the fuzz suite tried, per entry point, and prints them at the end of the run.
Each test records its count on its report, so the sum is right under xdist too; a plugin (named in
tests/conftest.py) rather than tests/fuzz/conftest.py, since xdist's controller loads no conftest of a
folder it does not collect."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

_KEY = "fuzz_inputs"
_tried: Counter[str] = Counter()


class Inputs:
    def __init__(self) -> None:
        self.counted: Counter[str] = Counter()

    def tried(self, entry_point: str) -> None:
        self.counted[entry_point] += 1


@pytest.fixture
def inputs(request: pytest.FixtureRequest) -> Iterator[Inputs]:
    counter = Inputs()
    yield counter
    request.node.user_properties.append((_KEY, dict(counter.counted)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    for name, counted in report.user_properties:
        if name == _KEY:
            _tried.update(counted)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _tried:
        per_entry_point = ", ".join(f"{name} {count}" for name, count in sorted(_tried.items()))
        terminalreporter.write_line(
            f"fuzz: {sum(_tried.values())} inputs tried (per entry point: {per_entry_point})"
        )
