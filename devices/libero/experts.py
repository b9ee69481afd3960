"""Scripted experts: pick-and-place tasks solved from the simulator's object positions.

An expert reads the scene's true state (never the images), so it is a demonstrator and a check of the
evaluation harness, not a policy. One state machine serves every supported task: above the object,
descend, close, lift, carry above the target, lower, open, rise. Each action moves the end effector
toward the phase's goal, `clip(GAIN * (goal - eef), -1, 1)` in the controller's units, orientation kept.
Per object, where to grasp (`Grasp`): bowls are pinched at the rim, so the fingers straddle its wall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

GAIN = 10.0
REACHED_M = 0.012  # a goal this close counts as reached
CLOSE_STEPS = 12  # steps the gripper needs to close on the object
OPEN_STEPS = 10
MAX_PHASE_STEPS = 40  # a goal blocked by contact (the object touching the target) ends its phase anyway
HOVER_M = 0.12  # above the object before descending, and above the target when carrying


@dataclass(frozen=True)
class Grasp:
    offset: tuple[float, float, float]  # grasp point relative to the object's position, metres
    place_height_m: float  # end-effector height above the target when the object is released
    release_shift: tuple[float, float] = (0.0, 0.0)  # where to release, relative to the target, to land on it


# Opening the fingers on a bowl's rim pushes the bowl 3-4 cm along the fingers' axis (+y): release short of it.
BOWL = Grasp((0.0, 0.045, 0.02), 0.05, (0.0, -0.03))
CAN = Grasp((0.0, 0.0, 0.005), 0.12)  # soup and sauce cans lie on their side: grasped across the middle
FLAT_PACKAGE = Grasp((0.0, 0.0, 0.01), 0.10)  # butter, cream cheese

GRASPS: dict[str, Grasp] = {
    "akita_black_bowl": BOWL,
    "alphabet_soup": CAN,
    "tomato_sauce": CAN,
    "ketchup": CAN,
    "cream_cheese": FLAT_PACKAGE,
    "butter": FLAT_PACKAGE,
}

# (suite, task) -> (object to pick, where to put it), names as the simulator's observation has them.
TASKS: dict[tuple[str, int], tuple[str, str]] = {
    ("libero_spatial", 0): ("akita_black_bowl_1", "plate_1"),
    ("libero_object", 0): ("alphabet_soup_1", "basket_1"),
    ("libero_object", 1): ("cream_cheese_1", "basket_1"),
}


class NoExpertError(ValueError):
    """No scripted expert exists for the task."""


def check_task(suite: str, task: int) -> tuple[str, str]:
    """The task's (object to pick, target), or NoExpertError naming the tasks that have an expert."""
    if (suite, task) not in TASKS:
        known = ", ".join(f"{s} task {t}" for s, t in TASKS)
        raise NoExpertError(f"no scripted expert for {suite} task {task}; experts exist for {known}")
    return TASKS[(suite, task)]


def _grasp(name: str) -> Grasp:
    kind = name.rsplit("_", 1)[0]
    return GRASPS[kind]


class PickAndPlaceExpert:
    """One episode's demonstrator; `act(observation)` gives the next action (7,), gripper -1 open / +1 close."""

    PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "open", "rise")

    def __init__(self, suite: str, task: int) -> None:
        self.object, self.target = check_task(suite, task)
        self.grasp = _grasp(self.object)
        self.phase = 0
        self._count = 0
        self._hold = np.zeros(3)

    def _goal(self, obs: Mapping[str, Any]) -> tuple[np.ndarray, float]:
        phase = self.PHASES[self.phase]
        grasp = np.asarray(obs[f"{self.object}_pos"]) + np.asarray(self.grasp.offset)
        # The object hangs from the grasp point: put its centre, not the fingers, over the target.
        shift = np.asarray(self.grasp.release_shift)
        target = np.asarray(obs[f"{self.target}_pos"]) + [*(np.asarray(self.grasp.offset[:2]) + shift), 0.0]
        above_target = target + [0.0, 0.0, HOVER_M + self.grasp.place_height_m]
        if phase == "approach":
            return grasp + [0.0, 0.0, HOVER_M], -1.0
        if phase == "descend":
            return grasp, -1.0
        if phase == "close":
            return self._hold, 1.0
        if phase == "lift":
            return self._hold + [0.0, 0.0, HOVER_M + self.grasp.place_height_m], 1.0
        if phase == "carry":
            return above_target, 1.0
        if phase == "lower":
            return target + [0.0, 0.0, self.grasp.place_height_m], 1.0
        if phase == "open":
            return self._hold, -1.0
        return self._hold + [0.0, 0.0, HOVER_M], -1.0

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        eef = np.asarray(obs["robot0_eef_pos"], np.float64)
        goal, gripper = self._goal(obs)
        phase = self.PHASES[self.phase]
        self._count += 1
        timed = {"close": CLOSE_STEPS, "open": OPEN_STEPS}
        if phase in timed:
            done = self._count >= timed[phase]
        else:
            done = np.linalg.norm(goal - eef) < REACHED_M or self._count >= MAX_PHASE_STEPS
        if done and self.phase < len(self.PHASES) - 1:
            self.phase += 1
            self._count = 0
            self._hold = eef.copy()
            goal, gripper = self._goal(obs)
        action = np.zeros(7)
        action[:3] = np.clip(GAIN * (goal - eef), -1.0, 1.0)
        action[6] = gripper
        return action
