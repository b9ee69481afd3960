"""Episodes of the evaluation written in the project's episode format (runtime/control/episode.py), so a
scripted expert's runs become demonstrations to train on and recorded data for `rdvla calibrate`::

    <episode>/episode.json     the header: instruction, cameras, and a `libero` block (suite, task, initial
                               state, render mode, success)
    <episode>/steps.jsonl      the step log: per control step the frame number of each camera, the proprio
                               and the `proposed` action (the controller's units, gripper -1 open / +1 close:
                               the raw convention the authors' LIBERO datasets store; `executed` is the same
                               action in metres and radians after the safety filter)
    <episode>/<role>.npz       key `frames`, uint8 (steps + 1, 256, 256, 3): the camera's images as the policy
                               receives them (rotated 180 degrees), indexed by frame number (the scene's step)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rdvla.devices.libero.scene import LiberoScene
from rdvla.devices.libero.suites import ROLES
from rdvla.runtime.control.episode import finish_episode, open_episode, write_episode_header
from rdvla.runtime.control.records import RunSummary, StartRecord, StepRecord
from rdvla.runtime.control.subscriber import Subscriber
from rdvla.runtime.outputs import atomic_write

FRAMES_KEY = "frames"
FRAMES_SUFFIX = ".npz"


def read_frames(path: Path) -> np.ndarray:
    """A camera's frames of a recorded episode, (frames, H, W, 3) uint8 indexed by frame number."""
    try:
        with np.load(path) as data:
            frames = data[FRAMES_KEY]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not a frames file of a recorded LIBERO episode ({exc})") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames are {frames.dtype} {frames.shape}, expected uint8 (N, H, W, 3)")
    return frames


def episode_name(suite: str, task: int, init: str) -> str:
    return f"{suite}_task{task}_{init.replace(':', '')}"


def recording_name(role: str) -> str:
    return f"{role}{FRAMES_SUFFIX}"


class DemonstrationRecorder(Subscriber):
    def __init__(self, directory: Path, scene: LiberoScene, action_noise: float = 0.0) -> None:
        self.directory = directory
        self.scene = scene
        self._log = open_episode(directory, [recording_name(role) for role in ROLES], ())
        self._frames: list[tuple[np.ndarray, ...]] = []
        assert scene.init is not None
        self._libero: dict[str, Any] = {"suite": scene.task.suite.name, "task": scene.task.index,
                                        "init": {"kind": scene.init.kind, "seed" if scene.init.kind == "random" else "index": scene.init.index},
                                        "render": scene.render_mode, "action_noise": action_noise}

    def on_start(self, record: StartRecord) -> None:
        write_episode_header(self.directory, {
            "instruction": self.scene.task.language, "rate_hz": record.settings["rate_hz"],
            "cameras": [{"role": role, "recording": recording_name(role), "source": f"libero {self.scene.render_mode} render"}
                        for role in ROLES],
            "robot": "libero", "libero": self._libero,
        })
        self._log.on_start(record)
        self._frames.append(self.scene.images())

    def on_step(self, record: StepRecord) -> None:
        self._log.on_step(record)
        self._frames.append(self.scene.images())

    def on_end(self, summary: RunSummary) -> None:
        self._log.on_end(summary)
        for index, role in enumerate(ROLES):
            with atomic_write(self.directory / recording_name(role)) as temporary, open(temporary, "wb") as f:
                np.savez_compressed(f, **{FRAMES_KEY: np.stack([frames[index] for frames in self._frames])})
        finish_episode(self.directory, summary, {"libero": {**self._libero, "success": bool(self.scene.success)}})
