"""The run's records: the JSON-lines step log, the end-of-run summary, and recorded episodes.

Step log (``--log PATH``, or ``DIR/steps.jsonl`` of a recorded episode): one JSON object per line,
written as it happens and flushed line by line, so a killed run leaves every finished step on disk.

* ``{"type": "start", ...}``: the run's settings (bundle, backend, instruction, rate, mode, horizon,
  halting, blend, safety limits, action scale, dry run or not) and ``prime``: the query that filled
  the queue before the first cycle (``query``, as below, with ``obs_slot`` 0), with the ``frames``
  and ``proprio`` it was computed from.
* ``{"type": "step", ...}``, one per control cycle:
  ``step`` (cycle count from 0), ``slot`` (grid slot; ``slot - step`` slots were missed so far),
  ``t`` (clock seconds since the start), ``missed_slots`` (skipped just before this cycle),
  ``frames`` (per camera: ``role``, ``frame_number``, ``timestamp_ms``, ``age_ms``), ``skew_ms``,
  ``proprio`` (8 values read from the robot), ``instruction``,
  ``query`` (a chunk that arrived during this cycle, else null: ``id``, ``obs_slot``, ``iterations``,
  ``stopped_by``, ``deadline_ms``, ``deltas``, ``timings_ms`` per stage, ``latency_ms`` from
  submission to arrival, ``horizon``, ``queued``, ``stale``, ``blended``, ``actions`` (8 x 7, the
  chunk after un-normalisation and gripper post-processing)),
  ``submitted`` (id of a query started from this cycle's observation, else null), ``iterations``
  (of the arriving chunk, else null), ``queue`` (actions left for later slots), ``inflight``,
  ``proposed`` (the queued action for this slot, policy units, or null), ``executed`` (after the
  safety filter, or null), ``limits`` (the limits that changed it), ``decision`` (``act``,
  ``dry_run``, ``hold`` or ``stop``), ``faults`` (``{"kind": ..., "detail": ...}``) and
  ``sections_ms`` (observe, infer, act, send).
* ``{"type": "summary", ...}``: see ``RunStats.summary``; also printed by ``rdvla run``.

Recorded episode (``rdvla run --record DIR``), for replay on a desk and for calibration::

    DIR/episode.json     format "rdvla-episode", version 1: instruction, bundle, rate, cameras
                         (role -> recording file in DIR, and what it came from), robot, summary
    DIR/<role>.db3       colour (+ depth) of each camera, recorded by the SDK recorder
                         (.bag before pyrealsense2 2.58); a replayed run copies its source files
    DIR/steps.jsonl      the step log above

To rebuild the policy inputs of a query, take the step whose ``slot`` equals the query's
``obs_slot`` (for the priming query: the start record's ``prime``): its ``frames`` name each
camera's frame (``frame_number``, ``timestamp_ms``) in the recording, and its ``proprio`` and
``instruction`` complete the inputs. ``read_episode`` does this for every observed step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from rdvla.runtime.control.pacing import STATS_WINDOW, RollingStats

EPISODE_FORMAT = "rdvla-episode"
EPISODE_VERSION = 1
EPISODE_FILE = "episode.json"
STEPS_FILE = "steps.jsonl"
MAX_TRACKED_ITERATIONS = 256  # the iteration histogram has at most this many keys


def floats(values: Iterable[float] | np.ndarray, digits: int = 6) -> list[Optional[float]]:
    """JSON-safe numbers: rounded, NaN and infinities as null (JSON has no NaN)."""
    return [round(float(v), digits) if math.isfinite(v) else None for v in np.asarray(values, np.float64).ravel()]


def matrix(values: np.ndarray, digits: int = 6) -> list[list[Optional[float]]]:
    return [floats(row, digits) for row in np.asarray(values, np.float64)]


class StepLog:
    """Writes records as JSON lines; line-buffered, so every finished line reaches the file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: Optional[IO[str]] = open(path, "w", encoding="utf-8", buffering=1)

    def write(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"step log {self.path} is closed")
        self._file.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every record of a step log (a cut-off last line, from a killed run, is left out)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


class RunStats:
    """What the summary reports, accumulated step by step in constant memory."""

    def __init__(self, window: int = STATS_WINDOW) -> None:
        self._window = window
        self.steps = 0
        self.acted = 0  # steps whose action was sent (or would have been, in a dry run)
        self.holds = 0
        self.limited = 0  # steps where the safety filter changed the action
        self.queries = 0
        self.stale_actions = 0
        self.blended_actions = 0
        self.iterations: dict[int, int] = {}
        self.stopped_by: dict[str, int] = {}
        self.query_latency = RollingStats(window)
        self.query_stages: dict[str, RollingStats] = {}
        self.frame_age = RollingStats(window)
        self.queue = RollingStats(window)

    def add_step(self, record: Mapping[str, Any]) -> None:
        self.steps += 1
        decision = record["decision"]
        self.acted += decision in ("act", "dry_run")
        self.holds += decision == "hold"
        self.limited += bool(record["limits"])
        self.queue.add(record["queue"])
        for frame in record["frames"]:
            self.frame_age.add(frame["age_ms"])
        query = record["query"]
        if query is not None:
            self.add_query(query)

    def add_query(self, query: Mapping[str, Any]) -> None:
        self.queries += 1
        self.stale_actions += query["stale"]
        self.blended_actions += query["blended"]
        k = min(int(query["iterations"]), MAX_TRACKED_ITERATIONS)
        self.iterations[k] = self.iterations.get(k, 0) + 1
        self.stopped_by[query["stopped_by"]] = self.stopped_by.get(query["stopped_by"], 0) + 1
        self.query_latency.add(query["latency_ms"])
        for stage, ms in query["timings_ms"].items():
            stats = self.query_stages.get(stage)
            if stats is None:
                stats = self.query_stages[stage] = RollingStats(self._window)
            stats.add(ms)

    def iteration_summary(self) -> dict[str, Any]:
        if not self.iterations:
            return {"n": 0}
        ks = np.array(list(self.iterations), np.float64)
        counts = np.array(list(self.iterations.values()), np.float64)
        return {
            "n": int(counts.sum()),
            "mean": round(float((ks * counts).sum() / counts.sum()), 3),
            "min": int(ks.min()),
            "max": int(ks.max()),
            "histogram": {str(k): self.iterations[k] for k in sorted(self.iterations)},
            "stopped_by": dict(sorted(self.stopped_by.items())),
        }

    def summary(self, timer: Mapping[str, Any], faults: Mapping[str, int], *, duration_s: float, rate_hz: float,
                stop_reason: str, faulted: bool, dry_run: bool, robot_travel_m: Optional[float]) -> dict[str, Any]:
        """The end-of-run record: rate achieved, latencies, overruns, queue, iterations, faults."""
        return {
            "type": "summary",
            "stop_reason": stop_reason,
            "stopped_on_fault": faulted,
            "steps": self.steps,
            "duration_s": round(duration_s, 3),
            "target_rate_hz": rate_hz,
            "achieved_rate_hz": round(self.steps / duration_s, 3) if duration_s > 0 else None,
            "dry_run": dry_run,
            "acted": self.acted,
            "holds": self.holds,
            "limited": self.limited,
            "overruns": timer["overruns"],
            "missed_slots": timer["missed_slots"],
            "max_overrun_ms": timer["max_overrun_ms"],
            "step_ms": timer["cycle_work_ms"],
            "sections_ms": timer["sections_ms"],
            "queries": self.queries,
            "query_latency_ms": self.query_latency.summary(),
            "query_stages_ms": {stage: stats.summary() for stage, stats in self.query_stages.items()},
            "iterations": self.iteration_summary(),
            "stale_actions": self.stale_actions,
            "blended_actions": self.blended_actions,
            "queue": self.queue.summary(digits=2),
            "frame_age_ms": self.frame_age.summary(),
            "faults": dict(sorted(faults.items())),
            "robot_travel_m": None if robot_travel_m is None else round(robot_travel_m, 4),
        }


def open_episode(directory: Path) -> Path:
    """Create an episode directory, refusing one that already holds an episode; returns its step log path."""
    if (directory / EPISODE_FILE).exists() or (directory / STEPS_FILE).exists():
        raise FileExistsError(f"{directory} already holds an episode; choose another --record directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory / STEPS_FILE


def write_episode_header(directory: Path, info: Mapping[str, Any]) -> None:
    header = {"format": EPISODE_FORMAT, "version": EPISODE_VERSION,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "steps_file": STEPS_FILE, **info}
    (directory / EPISODE_FILE).write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")


def finish_episode(directory: Path, summary: Mapping[str, Any]) -> None:
    path = directory / EPISODE_FILE
    header = json.loads(path.read_text(encoding="utf-8"))
    header["summary"] = dict(summary)
    path.write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")


def copy_recordings(directory: Path, sources: Sequence[tuple[str, Path]]) -> list[dict[str, str]]:
    """Copy the recordings a replayed run reads into the episode; one copy per distinct file."""
    copied: dict[Path, str] = {}
    cameras = []
    for role, source in sources:
        resolved = source.resolve()
        if resolved not in copied:
            name = f"{role}{source.suffix}"
            shutil.copyfile(source, directory / name)
            copied[resolved] = name
        cameras.append({"role": role, "recording": copied[resolved], "source": f"replay of {source}"})
    return cameras


@dataclass(frozen=True)
class EpisodeStep:
    """One observed control step: what a policy query from it would take as input."""

    step: int
    slot: int
    frame_numbers: tuple[int, ...]  # per camera, in the order of Episode.recordings
    proprio: np.ndarray  # (8,) raw, as the robot reported it
    instruction: str


@dataclass(frozen=True)
class Episode:
    header: dict[str, Any]
    recordings: tuple[Path, ...]  # per camera in policy order; a replayed run may name one file twice
    steps: tuple[EpisodeStep, ...]


def read_episode(directory: Path) -> Episode:
    """An episode recorded by ``rdvla run --record``: its recordings and every step that observed
    the cameras and the robot (steps that held on a camera or robot fault have nothing to replay)."""
    header = json.loads((directory / EPISODE_FILE).read_text(encoding="utf-8"))
    if header.get("format") != EPISODE_FORMAT or header.get("version") != EPISODE_VERSION:
        raise ValueError(f"{directory}: not an {EPISODE_FORMAT} version {EPISODE_VERSION} directory")
    recordings = tuple(directory / camera["recording"] for camera in header["cameras"])
    steps = tuple(
        EpisodeStep(record["step"], record["slot"], tuple(int(f["frame_number"]) for f in record["frames"]),
                    np.asarray(record["proprio"], np.float64), record["instruction"])
        for record in read_log(directory / header.get("steps_file", STEPS_FILE))
        if record["type"] == "step" and record["frames"] and record["proprio"] is not None
    )
    return Episode(header, recordings, steps)
