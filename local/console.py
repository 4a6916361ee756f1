"""The local stack's standard output: what a CloudWatch log group shows per function, on one console.

- Whole lines. A local process runs several functions' invocations at once in threads, and Powertools
  prints a metrics document and its newline in two writes: without a lock per line, two documents
  share a line and the next line is empty.
- A scheduled invocation prints only metrics that say something new. The deployed sweeper emits its
  `ExpiredConnectionsClosed` datapoint every minute, zero included (a zero is what an alarm on it
  needs), and the connection gauges; locally it runs every few seconds, and its zeros and unchanged
  gauges would fill the console.
- Every metric (EMF) line, printed or not, also goes to `on_metrics` (local.prometheus, `/metrics`):
  a zero is a value there, and a gauge's zero its current level.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TextIO, cast

from local.prometheus import EMF_START

# Set for the invocations a schedule makes (local.serving.every); threads started with
# asyncio.to_thread inherit it, so it covers exactly what those invocations print.
scheduled: ContextVar[bool] = ContextVar("scheduled_invocation", default=False)


class Output:
    """Whether an invocation is still heard: one past its timeout is not (Lambda has ended it)."""

    heard = True


# Set per invocation by local.lambda_runtime; shared, by reference, with the tasks the invocation starts.
invocation_output: ContextVar[Output | None] = ContextVar("invocation_output", default=None)


class Console:
    """A text stream in front of the process's stdout (the part of TextIO that print, logging and
    uvicorn use)."""

    def __init__(self, stream: TextIO, on_metrics: Callable[[str], None] | None = None) -> None:
        self.stream = stream
        self.on_metrics = on_metrics
        self.encoding = stream.encoding
        self.errors = stream.errors
        self._lock = threading.Lock()
        self._partial = threading.local()
        self._scheduled_last: dict[str, str] = {}  # a schedule's metrics and dimensions -> last values

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        output = invocation_output.get()
        if output is not None and not output.heard:
            return len(text)
        pending: str = getattr(self._partial, "text", "") + text
        *lines, self._partial.text = pending.split("\n")
        if self.on_metrics is not None:
            for line in lines:
                if line.startswith(EMF_START):
                    self.on_metrics(line)
        with self._lock:
            shown = [line + "\n" for line in lines if not (scheduled.get() and self._stale(line))]
            if shown:
                self.stream.write("".join(shown))
                self.stream.flush()
        return len(text)

    def _stale(self, line: str) -> bool:
        """A scheduled invocation's metrics line that is all zeros, or says what its last did."""
        if not line.startswith(EMF_START):
            return False
        if is_idle_metrics(line):
            return True
        try:
            document = json.loads(line)
            aws = document.pop("_aws")
            names = [
                metric["Name"] for directive in aws["CloudWatchMetrics"] for metric in directive["Metrics"]
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        values = json.dumps([document.pop(name, None) for name in names])
        series = json.dumps([names, document], sort_keys=True)  # the metrics and their dimensions
        last, self._scheduled_last[series] = self._scheduled_last.get(series), values
        return last == values

    def flush(self) -> None:
        pending: str = getattr(self._partial, "text", "")
        self._partial.text = ""
        with self._lock:
            if pending:
                self.stream.write(pending)
            self.stream.flush()


def is_idle_metrics(line: str) -> bool:
    """An embedded-metric-format document whose every metric is zero."""
    if not line.startswith(EMF_START):
        return False
    try:
        document = json.loads(line)
        names = [
            metric["Name"]
            for directive in document["_aws"]["CloudWatchMetrics"]
            for metric in directive["Metrics"]
        ]
        values = [document[name] for name in names]
    except (ValueError, KeyError, TypeError):
        return False
    flat = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return bool(names) and all(v == 0 for v in flat)


def install(on_metrics: Callable[[str], None] | None = None) -> None:
    """Make this process's stdout a Console (before the handlers create their logger, which keeps the
    stream it found)."""
    if not isinstance(sys.stdout, Console):
        sys.stdout = cast(TextIO, Console(sys.stdout, on_metrics))
