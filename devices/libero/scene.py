"""One LIBERO task in the simulator, stepped one control step per action.

`LiberoScene` owns the robosuite environment of a task: it resets it to an initial state (the suite's
fixed state i, or a seeded random placement), lets the objects settle, steps it, and answers what the
policy sees (images, proprio), whether the task succeeded, and the scene's state for the evaluation's
records (gripper command, distance from the end effector to the task's object of interest). The
camera kind and the robot kind of this package share one scene.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from rdvla.devices.libero.protocol import policy_image, proprio
from rdvla.devices.libero.render import RENDER_MODES, FastRenderer
from rdvla.devices.libero.suites import CAMERAS, IMAGE_SIZE, SETTLE_ACTION, SETTLE_STEPS, Task, import_libero, quiet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InitState:
    """Where an episode starts: the suite's fixed initial state `index` (held out for evaluation), or a
    random placement drawn from `index` as the seed (for demonstrations)."""

    kind: str  # "fixed" | "random"
    index: int

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "random"):
            raise ValueError(f"unknown initial-state kind {self.kind!r}")
        if self.index < 0:
            raise ValueError(f"initial state index must be >= 0, got {self.index}")

    def __str__(self) -> str:
        return f"{self.kind}:{self.index}"


@dataclass(frozen=True)
class SceneState:
    gripper_closed: bool  # the last gripper command closed it
    object_distance_m: Optional[float]  # end effector to the task's object of interest


class LiberoScene:
    def __init__(self, task: Task, render: str = "default", max_steps: Optional[int] = None) -> None:
        """`max_steps` ends episodes earlier than the suite's limit (quick checks, never a benchmark)."""
        if render not in RENDER_MODES:
            raise ValueError(f"unknown render mode {render!r}; choose {' or '.join(RENDER_MODES)}")
        import_libero()
        from libero.libero.envs import OffScreenRenderEnv
        from libero.libero.envs.env_wrapper import ControlEnv

        self.task = task
        self.render_mode = render
        self.max_steps = task.suite.max_steps if max_steps is None else max_steps
        options = dict(bddl_file_name=task.bddl_file, camera_heights=IMAGE_SIZE, camera_widths=IMAGE_SIZE)
        with quiet():
            if render == "default":
                self._env = OffScreenRenderEnv(**options)
            else:  # no robosuite renderer at all: cameras are drawn by FastRenderer on demand
                self._env = ControlEnv(**options, has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False)
        self._fast = FastRenderer(IMAGE_SIZE) if render == "fast" else None
        self._obs: dict[str, Any] = {}
        self._images: Optional[tuple[np.ndarray, ...]] = None
        self.steps = 0  # control steps since the settle steps
        self.success = False
        self.gripper_closed = False
        self.init: Optional[InitState] = None
        self.episodes = 0  # resets so far: whoever keeps per-episode state (an expert) notices a new episode

    @property
    def done(self) -> bool:
        return self.success or self.steps >= self.max_steps

    def reset(self, init: InitState) -> None:
        env = self._env
        with quiet():
            if init.kind == "fixed":
                states = self.task.init_states
                if init.index >= len(states):
                    raise ValueError(f"{self.task.suite.name} task {self.task.index} has initial states 0..{len(states) - 1}, "
                                     f"not {init.index}")
                env.seed(0)
                env.reset()
                self._obs = env.set_init_state(states[init.index])
            else:
                env.seed(init.index)  # LIBERO seeds numpy's global generator, which its placement samplers draw from
                self._obs = env.reset()
            for _ in range(SETTLE_STEPS):
                self._obs, *_ = env.step(list(SETTLE_ACTION))
        self._images = None
        self.init = init
        self.episodes += 1
        self.steps = 0
        self.success = bool(env.check_success())
        self.gripper_closed = False

    def step(self, action: np.ndarray) -> None:
        """One control step: [dx, dy, dz, drx, dry, drz, gripper] in LIBERO's units, gripper -1 open / +1 close."""
        if self.done:
            raise RuntimeError("the episode is over; reset the scene first")
        with quiet():
            self._obs, *_ = self._env.step(np.asarray(action, np.float64).tolist())
        self._images = None
        self.steps += 1
        self.gripper_closed = float(action[6]) > 0
        self.success = self.success or bool(self._env.check_success())

    def images(self) -> tuple[np.ndarray, ...]:
        """Both cameras as the policy sees them (rotated 180 degrees), third-person first."""
        if self._images is None:
            if self._fast is not None:
                raw = self._fast.render(self._env.sim.model._model, self._env.sim.data._data, CAMERAS)
            else:
                raw = [self._obs[f"{camera}_image"] for camera in CAMERAS]
            self._images = tuple(policy_image(image) for image in raw)
        return self._images

    def proprio(self) -> np.ndarray:
        obs = self._obs
        return proprio(obs["robot0_eef_pos"], obs["robot0_eef_quat"], obs["robot0_gripper_qpos"])

    def observation(self) -> dict[str, Any]:
        """The simulator's raw observation of the current step (positions of every object, robot state)."""
        return self._obs

    def state(self) -> SceneState:
        objects = list(getattr(self._env, "obj_of_interest", []) or [])
        distance = None
        for name in objects:
            key = f"{name}_pos"
            if key in self._obs:
                distance = float(np.linalg.norm(self._obs[key] - self._obs["robot0_eef_pos"]))
                break
        return SceneState(self.gripper_closed, distance)

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        with contextlib.suppress(Exception):  # robosuite's EGL context may already be gone at interpreter exit
            self._env.close()
