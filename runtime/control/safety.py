"""What stands between the policy and the arm: the action filter.

``SafetyFilter`` turns a proposed action (policy units) into one that respects the robot's limits,
in metres and radians: the one place where ``action_scale`` converts policy units (the robot takes
the filtered action as it is):
non-finite actions are rejected; translation and rotation are shortened along their own direction
to the per-action step and speed limits; their change from the previous command is bounded by an
acceleration limit (after a hold the arm is at rest, so motion ramps up again); the target position
is kept inside the workspace; the gripper command is clipped to [-1, 1]. The robot applies its own
limits as well: this filter is the loop's own line, and it says which limits it met.

The faults of a cycle and the loop's reaction to them: `runtime.control.faults`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from rdvla.devices.robots.base import RobotLimits, clip_norm


@dataclass(frozen=True)
class SafetyConfig:
    max_linear_accel_mps2: float = 1.0
    max_angular_accel_radps2: float = 5.0
    max_consecutive_faults: int = 10
    max_reconnect_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_linear_accel_mps2", "max_angular_accel_radps2", "max_reconnect_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.max_consecutive_faults < 1:
            raise ValueError(f"max_consecutive_faults must be at least 1, got {self.max_consecutive_faults}")


@dataclass(frozen=True)
class Filtered:
    action: Optional[np.ndarray]  # (7,) metres, radians, gripper: ready for Robot.send_action; None when rejected
    limits: tuple[str, ...] = ()  # the limits that changed the action
    rejected: Optional[str] = None  # why nothing may be sent


class SafetyFilter:
    """Limits actions for a robot commanded every ``period_s`` seconds."""

    def __init__(self, limits: RobotLimits, action_scale: tuple[float, float], period_s: float,
                 config: SafetyConfig = SafetyConfig()) -> None:
        self.limits = limits
        self.scale = action_scale
        self.config = config
        self.max_translation = min(limits.max_translation_m, limits.max_linear_speed_mps * period_s)
        self.max_rotation = min(limits.max_rotation_rad, limits.max_angular_speed_radps * period_s)
        self.max_translation_change = config.max_linear_accel_mps2 * period_s**2
        self.max_rotation_change = config.max_angular_accel_radps2 * period_s**2
        self._previous = np.zeros(6)  # last commanded motion in metres and radians

    def settings(self) -> dict[str, Any]:
        """The limits in force, as a run's start record states them."""
        c = self.config
        return {
            "max_translation_m": self.max_translation, "max_rotation_rad": self.max_rotation,
            "max_linear_accel_mps2": c.max_linear_accel_mps2, "max_angular_accel_radps2": c.max_angular_accel_radps2,
            "max_consecutive_faults": c.max_consecutive_faults, "max_reconnect_s": c.max_reconnect_s,
            "workspace_min": list(self.limits.workspace_min), "workspace_max": list(self.limits.workspace_max),
        }

    def at_rest(self) -> None:
        """The arm was held: the next motion starts from zero velocity."""
        self._previous = np.zeros(6)

    def apply(self, proposed: np.ndarray, position: np.ndarray) -> Filtered:
        values = np.asarray(proposed, np.float64)
        if values.shape != (7,):
            return Filtered(None, rejected=f"action has shape {values.shape}, expected (7,)")
        if not np.all(np.isfinite(values)):
            return Filtered(None, rejected="action has non-finite values")
        hit: list[str] = []
        translation = self._limit(values[:3] * self.scale[0], self._previous[:3], self.max_translation,
                                  self.max_translation_change, "translation", "linear_accel", hit)
        rotation = self._limit(values[3:6] * self.scale[1], self._previous[3:6], self.max_rotation,
                               self.max_rotation_change, "rotation", "angular_accel", hit)
        wanted = position + translation
        target = np.clip(wanted, self.limits.workspace_min, self.limits.workspace_max)
        if np.any(target != wanted):
            hit.append("workspace")
            translation = target - position
        gripper = min(1.0, max(-1.0, float(values[6])))
        if gripper != values[6]:
            hit.append("gripper")
        self._previous = np.concatenate([translation, rotation])
        return Filtered(np.concatenate([translation, rotation, [gripper]]), tuple(hit))

    @staticmethod
    def _limit(step: np.ndarray, previous: np.ndarray, max_step: float, max_change: float,
               step_name: str, change_name: str, hit: list[str]) -> np.ndarray:
        change = step - previous
        if float(np.linalg.norm(change)) > max_change:
            step = previous + clip_norm(change, max_change)
            hit.append(change_name)
        if float(np.linalg.norm(step)) > max_step:
            step = clip_norm(step, max_step)
            hit.append(step_name)
        return step
