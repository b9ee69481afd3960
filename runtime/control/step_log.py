"""The step log: every record of a run as one JSON line (see `records`), written as it happens.

Lines are flushed one by one, so a killed run leaves every finished step on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Mapping, Optional

from rdvla.runtime.control.records import LogRecord, RunSummary, StartRecord, StepRecord, record_from_json
from rdvla.runtime.control.subscriber import Subscriber


class StepLog(Subscriber):
    """Writes the run's records to `path`, a JSON object per line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: Optional[IO[str]] = open(path, "w", encoding="utf-8", buffering=1)

    def _write(self, data: Mapping[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"step log {self.path} is closed")
        self._file.write(json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")

    def on_start(self, record: StartRecord) -> None:
        self._write(record.to_json())

    def on_step(self, record: StepRecord) -> None:
        self._write(record.to_json())

    def on_end(self, summary: RunSummary) -> None:
        self._write(summary.to_json())
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


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
