"""One evaluation episode: a LIBERO scene driven through the same control loop as a robot.

The scene is reset to the episode's initial state, its two cameras and its arm become the loop's
cameras and robot, and the loop runs synchronously on a stepped clock: each cycle is one control
step of the simulator, which waits for the policy however long a query takes. The episode ends when
the robot kind reports it done (task success, or the suite's step limit).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from rdvla.devices.libero.camera import scene_cameras
from rdvla.devices.libero.robot import CONTROL_RATE_HZ, ActionNoise, LiberoRobot
from rdvla.devices.libero.scene import InitState, LiberoScene
from rdvla.runtime.control.broker import PolicyLike
from rdvla.runtime.control.config import LoopConfig
from rdvla.runtime.control.loop import ControlLoop
from rdvla.runtime.control.pacing import SteppedClock
from rdvla.runtime.control.records import QueryRecord, StartRecord, StepRecord
from rdvla.runtime.control.safety import SafetyConfig
from rdvla.runtime.control.subscriber import Subscriber
from rdvla.runtime.eval.demonstrations import DemonstrationRecorder, episode_name
from rdvla.runtime.eval.results import EpisodeResult, QueryOutcome
from rdvla.runtime.halting import HaltingRule
from rdvla.runtime.horizon import HorizonRule

# The authors run no safety filter in the simulator: accelerations are left unlimited so the filter
# never changes an action the simulator's controller accepts (its step limits are the controller's range).
UNLIMITED = SafetyConfig(max_linear_accel_mps2=1e9, max_angular_accel_radps2=1e9)
EPISODE_SEED = 7  # the authors' set_seed_everywhere(7): query n of an episode starts from the latent of seed 7 + n


@dataclass(frozen=True)
class EpisodeSettings:
    halting: Optional[HaltingRule]
    horizon: HorizonRule
    action_noise: float = 0.0  # sigma of the robot's ActionNoise (controller units); 0: none


PolicyFactory = Callable[[LiberoScene], PolicyLike]  # a worker's policy for its scene (the expert needs the scene)
Frames = list[tuple[tuple[np.ndarray, ...], Optional[int]]]  # per step: the policy's images, the iterations of the chunk


class _Watcher(Subscriber):
    """Keeps each query with the scene's state when it was asked, and (for videos) every step's images."""

    def __init__(self, scene: LiberoScene, keep_frames: bool) -> None:
        self.scene = scene
        self.queries: list[QueryOutcome] = []
        self.frames: Optional[Frames] = [] if keep_frames else None
        self._iterations: Optional[int] = None

    def _query(self, query: QueryRecord, step: int) -> None:
        state = self.scene.state()
        self._iterations = query.iterations
        self.queries.append(QueryOutcome(step, query.iterations, query.stopped_by, round(query.timings_ms.get("total", 0.0), 3),
                                         state.gripper_closed, None if state.object_distance_m is None
                                         else round(state.object_distance_m, 4)))

    def on_start(self, record: StartRecord) -> None:
        self._query(record.prime.query, 0)
        if self.frames is not None:
            self.frames.append((self.scene.images(), self._iterations))

    def on_step(self, record: StepRecord) -> None:
        if record.query is not None:
            self._query(record.query, record.step)
        if self.frames is not None:
            self.frames.append((self.scene.images(), self._iterations))


def run_episode(scene: LiberoScene, policy: PolicyLike, init: InitState, settings: EpisodeSettings,
                keep_frames: bool = False, record: Optional[Path] = None) -> tuple[EpisodeResult, Optional[Frames]]:
    """One episode from `init`; with `record`, also written there as a demonstration (episode format)."""
    scene.reset(init)
    stepped = SteppedClock()
    cameras = scene_cameras(scene, stepped.now)
    config = LoopConfig(
        instruction=scene.task.language, rate_hz=CONTROL_RATE_HZ, mode="sync", horizon=settings.horizon,
        halting=settings.halting, deadlines=False, execute=True, max_steps=scene.max_steps + 1, gripper="libero",
        seed=EPISODE_SEED, safety=UNLIMITED,
    )
    watcher = _Watcher(scene, keep_frames)
    subscribers: list[Subscriber] = [watcher]
    if record is not None:
        subscribers.append(DemonstrationRecorder(record / episode_name(scene.task.suite.name, scene.task.index, str(init)), scene,
                                                 settings.action_noise))
    # Seeded by the episode's initial state: the same episode meets the same disturbance on every run.
    noise = ActionNoise(settings.action_noise, zlib.crc32(str(init).encode())) if settings.action_noise > 0 else None
    loop = ControlLoop(cameras, policy, LiberoRobot(scene, noise), config, clock=stepped.now, sleep=stepped.sleep,
                       subscribers=subscribers)
    summary = loop.run()
    if summary.stop_reason not in ("episode_done", "steps"):
        raise RuntimeError(f"{scene.task.suite.name} task {scene.task.index} {init}: the control loop stopped: {summary.stop_reason}")
    result = EpisodeResult(scene.task.suite.name, scene.task.index, str(init), bool(scene.success), scene.steps,
                           scene.render_mode, watcher.queries)
    return result, watcher.frames

