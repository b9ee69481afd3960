"""The step log: every record of a run as one JSON line (see `records`), written as it happens.

Lines are flushed one by one, so a killed run leaves every finished step on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from rdvla.runtime.control.records import LogRecord, RunSummary, StartRecord, StepRecord, record_from_json
from rdvla.runtime.control.subscriber import Subscriber
from rdvla.runtime.outputs import OwnedFile


class StepLog(Subscriber):
    """Writes the run's records to `path`, a JSON object per line. The file is this run's alone: an
    existing one is kept unless `overwrite`, and a second run writing it is refused with its PID.
    A run that never starts (nothing written) leaves no log behind."""

    def __init__(self, path: Path, *, overwrite: bool = False, option: str = "--log") -> None:
        self.path = path
        self._file = OwnedFile(path, overwrite=overwrite, option=option)
        self._written = False
        self._closed = False

    def _write(self, data: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
        self._written = True

    def on_start(self, record: StartRecord) -> None:
        self._write(record.to_json())

    def on_step(self, record: StepRecord) -> None:
        self._write(record.to_json())

    def on_end(self, summary: RunSummary) -> None:
        self._write(summary.to_json())
        self.close()

    def close(self) -> None:
        if not self._closed and not self._written:
            self.path.unlink(missing_ok=True)  # still holding its lock: the empty file is ours
        self._closed = True
        self._file.close()


def read_log(path: Path) -> list[LogRecord]:
    """Every record of a step log (a cut-off last line, from a killed run, is left out)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                break
            try:
                records.append(record_from_json(data))
            except ValueError as exc:
                raise ValueError(f"{path}, line {number}: {exc}") from None
    return records
