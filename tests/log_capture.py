"""Everything a process would print, for "no secret in logs" checks: log records, and the
process's stdout and stderr with the production log handler writing to them.

Under pytest the log handler installed once per session writes to the stream that was
sys.stderr then (pytest's own capture), not to the test's: a check on stdout/stderr alone would
read an empty capture and pass. This fixture installs the production handler afresh (JSON
lines) writing to whatever sys.stderr is at each line — the test's capture while it runs — so
`lines()` sees what an operator's log collector would. Tests assert first that a known line is
there (`assert_logged`), then that a secret is not.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from socialflow.lib.logging import configure_logging
from socialflow.settings import Environment, LogFormat, Settings


class _CurrentStderr:
    """sys.stderr as it is at each write, like a process's fd 2."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@dataclass
class ProcessOutput:
    capfd: pytest.CaptureFixture[str]
    caplog: pytest.LogCaptureFixture
    _printed: list[str] = field(default_factory=list)

    def _read(self) -> None:
        out, err = self.capfd.readouterr()
        self._printed += [out, err]

    def printed(self) -> str:
        """Everything written to stdout and stderr so far (log lines, prints, C libraries)."""
        self._read()
        return "".join(self._printed)

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines printed so far."""
        found = []
        for line in self.printed().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def everything(self) -> str:
        """Printed output and every log record, with its message, arguments and traceback."""
        records = "\n".join(
            f"{r.getMessage()} {r.msg!r} {r.args!r} {r.exc_text}" for r in self.caplog.records
        )
        return "\n".join([self.printed(), self.caplog.text, records])

    def assert_logged(self, event: str, **fields: Any) -> dict[str, Any]:
        """The positive control: a line with this event (and fields) was printed and recorded."""
        printed = [
            line
            for line in self.lines()
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]
        assert printed, f"no printed {event} {fields} in:\n{self.printed()[-3000:]}"
        recorded = [r for r in self.caplog.records if event in r.getMessage()]
        assert recorded, f"no recorded {event}"
        return printed[-1]


@pytest.fixture(name="process_output")
def process_output_fixture(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[ProcessOutput]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    # DEBUG: a secret must not leak at any level an operator might turn on.
    settings = Settings(
        env=Environment.TEST, log_format=LogFormat.JSON, log_level="DEBUG", _env_file=None
    )
    configure_logging(settings)
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.get_name() == "socialflow":
            handler.stream = _CurrentStderr()
    try:
        yield ProcessOutput(capfd, caplog)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
