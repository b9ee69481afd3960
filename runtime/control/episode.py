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
from rdvla.runtime.control.step_log import read_log

EPISODE_FORMAT = "rdvla-episode"
EPISODE_VERSION = 1
EPISODE_FILE = "episode.json"
STEPS_FILE = "steps.jsonl"


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


def finish_episode(directory: Path, summary: RunSummary) -> None:
    path = directory / EPISODE_FILE
    header = json.loads(path.read_text(encoding="utf-8"))
    header["summary"] = summary.to_json()
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
        EpisodeStep(record.step, record.slot, tuple(f.frame_number for f in record.frames),
                    np.asarray(record.proprio, np.float64), record.instruction)
        for record in read_log(directory / header.get("steps_file", STEPS_FILE))
        if isinstance(record, StepRecord) and record.frames and record.proprio is not None
    )
    return Episode(header, recordings, steps)
