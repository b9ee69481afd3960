"""What stands between the policy and the arm: the action filter and the fault rules.

``SafetyFilter`` turns a proposed action (policy units) into one that respects the robot's limits:
non-finite actions are rejected; translation and rotation are shortened along their own direction
to the per-action step and speed limits; their change from the previous command is bounded by an
acceleration limit (after a hold the arm is at rest, so motion ramps up again); the target position
is kept inside the workspace; the gripper command is clipped to [-1, 1]. The robot applies its own
limits as well: this filter is the loop's own line, and it says which limits it met.

``FaultMonitor`` turns the faults of each step into the loop's reaction:

| fault | reaction |
|---|---|
| stale_observation, skewed_observation, camera_error | hold; stop after ``max_consecutive_faults`` in a row |
| inference_error, nonfinite_action, overrun, starved | hold; stop after ``max_consecutive_faults`` in a row |
| camera_disconnected | hold while the camera reconnects; stop after ``max_reconnect_s`` |
| robot_timeout, robot_error | stop at once |
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from rdvla.devices.robots.base import RobotLimits, clip_norm


class Fault(str, enum.Enum):
    STALE_OBSERVATION = "stale_observation"
    SKEWED_OBSERVATION = "skewed_observation"
    CAMERA_ERROR = "camera_error"
    CAMERA_DISCONNECTED = "camera_disconnected"
    INFERENCE_ERROR = "inference_error"
    NONFINITE_ACTION = "nonfinite_action"
    OVERRUN = "overrun"
    STARVED = "starved"
    ROBOT_TIMEOUT = "robot_timeout"
    ROBOT_ERROR = "robot_error"


STOP_AT_ONCE = frozenset({Fault.ROBOT_TIMEOUT, Fault.ROBOT_ERROR})
# A camera that is reconnecting is expected to be away for a while: it has its own time limit.
COUNTED = frozenset(Fault) - STOP_AT_ONCE - {Fault.CAMERA_DISCONNECTED}


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
    action: Optional[np.ndarray]  # (7,) policy units, ready for Robot.send_action; None when rejected
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
        action = np.concatenate([translation / self.scale[0], rotation / self.scale[1], [gripper]])
        return Filtered(action, tuple(hit))

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


@dataclass
class FaultMonitor:
    """Counts faults (in total, and in a row per kind) and says when the loop must stop."""

    config: SafetyConfig
    totals: dict[str, int] = field(default_factory=dict)
    in_a_row: dict[Fault, int] = field(default_factory=dict)
    disconnected_since: Optional[float] = None

    def update(self, faults: set[Fault], now: float) -> Optional[str]:
        """Record one step's faults; returns why the loop must stop, or None."""
        for fault in faults:
            self.totals[fault.value] = self.totals.get(fault.value, 0) + 1
        for fault in COUNTED:
            self.in_a_row[fault] = self.in_a_row.get(fault, 0) + 1 if fault in faults else 0
        if Fault.CAMERA_DISCONNECTED in faults:
            if self.disconnected_since is None:
                self.disconnected_since = now
        else:
            self.disconnected_since = None
        for fault in sorted(faults & STOP_AT_ONCE):
            return fault.value
        for fault, count in sorted(self.in_a_row.items()):
            if count >= self.config.max_consecutive_faults:
                return f"{fault.value} in {count} consecutive steps"
        if self.disconnected_since is not None and now - self.disconnected_since >= self.config.max_reconnect_s:
            return f"camera disconnected for {now - self.disconnected_since:.1f} s"
        return None
