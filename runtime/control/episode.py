"""Recorded episodes (`rdvla run --record DIR`), for replay on a desk and for calibration::

    DIR/episode.json     format "rdvla-episode", version 1: instruction, bundle, rate, cameras
                         (role -> recording file in DIR, and what it came from), robot, summary
    DIR/<role>.db3       colour (+ depth) of each camera, recorded by the SDK recorder
                         (.bag before pyrealsense2 2.58); a replayed run copies its source files
    DIR/steps.jsonl      the step log (`records`, `step_log`)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rdvla.runtime.control.records import RunSummary, StepRecord
from rdvla.runtime.control.step_log import StepLog, read_log
from rdvla.runtime.outputs import OutputError, atomic_write, check_new_files

EPISODE_FORMAT = "rdvla-episode"
EPISODE_VERSION = 1
EPISODE_FILE = "episode.json"
STEPS_FILE = "steps.jsonl"


def check_episode_directory(directory: Path, recordings: Sequence[str] = (), *, overwrite: bool = False) -> None:
    """Refuse, before any work, a directory whose episode files (or `recordings`) exist, unless `overwrite`."""
    check_new_files(directory, [EPISODE_FILE, STEPS_FILE, *recordings], overwrite=overwrite, option="--record")


def open_episode(directory: Path, recordings: Sequence[str], replayed: Sequence[Path], *, overwrite: bool = False) -> StepLog:
    """Claim an episode directory for this run and return its step log (whose lock keeps a second run out).

    `recordings` are the file names the run will write there; `replayed` the recordings it reads,
    which must not be among them.
    """
    check_episode_directory(directory, recordings, overwrite=overwrite)
    targets = {(directory / name).resolve() for name in recordings}
    for source in replayed:
        if source.resolve() in targets:
            raise OutputError(f"--record {directory}: the replayed recording {source} would be copied onto itself; "
                              "record the episode into another directory")
    directory.mkdir(parents=True, exist_ok=True)
    return StepLog(directory / STEPS_FILE, overwrite=overwrite, option="--record")


def write_episode_header(directory: Path, info: Mapping[str, Any]) -> None:
    header = {"format": EPISODE_FORMAT, "version": EPISODE_VERSION,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "steps_file": STEPS_FILE, **info}
    with atomic_write(directory / EPISODE_FILE) as temporary:
        temporary.write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")


def finish_episode(directory: Path, summary: RunSummary, outcome: Mapping[str, Any] = {}) -> None:
    """Add the run's summary (and what the caller learned of the episode, `outcome`) to its header."""
    path = directory / EPISODE_FILE
    header = json.loads(path.read_text(encoding="utf-8"))
    header["summary"] = summary.to_json()
    header.update(outcome)
    with atomic_write(path) as temporary:  # a header cut short would lose the episode's description
        temporary.write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")


def replay_copies(sources: Sequence[tuple[str, Path]]) -> dict[Path, str]:
    """The file name in the episode of each distinct recording a replayed run reads."""
    names: dict[Path, str] = {}
    for role, source in sources:
        names.setdefault(source.resolve(), f"{role}{source.suffix}")
    return names


def copy_recordings(directory: Path, sources: Sequence[tuple[str, Path]]) -> list[dict[str, str]]:
    """Copy the recordings a replayed run reads into the episode; one copy per distinct file."""
    names = replay_copies(sources)
    for source, name in names.items():
        shutil.copyfile(source, directory / name)
    return [{"role": role, "recording": names[source.resolve()], "source": f"replay of {source}"} for role, source in sources]


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
        EpisodeStep(record.step, record.slot, tuple(f.frame_number for f in record.frames),
                    np.asarray(record.proprio, np.float64), record.instruction)
        for record in read_log(directory / header.get("steps_file", STEPS_FILE))
        if isinstance(record, StepRecord) and record.frames and record.proprio is not None
    )
    return Episode(header, recordings, steps)
