"""The robot as the control loop sees it: an 8-d proprio state in, a 7-d delta action out.

State (proprio, as RD-VLA was trained on LIBERO): end-effector position (3, metres), orientation as
axis-angle (3, radians), the two finger positions (2, metres; +q and -q for an opening of 2q).

Action (`Robot.send_action`): delta position (3, metres), delta rotation as axis-angle (3, radians),
gripper command (1) in [-1, 1] with -1 = open and +1 = close (the LIBERO convention after RD-VLA's
gripper post-processing). ``action_scale`` says what one policy unit is on this robot (policy units
-> metres, radians: e.g. (0.05, 0.5) for a policy trained on LIBERO's operational-space
controller); the control loop's safety filter applies it, once, and a robot only ever sees
metres and radians.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

import numpy as np

Clock = Callable[[], float]
RT = TypeVar("RT", bound="Robot")

STATE_DIM = 8
ACTION_DIM = 7


class RobotStatus(enum.IntEnum):
    READY = 0  # accepting actions
    HOLDING = 1  # keeping its pose; the next action releases the hold
    STOPPED = 2  # halted; actions are refused until reset
    FAULT = 3  # the controller reports a fault


class RobotError(RuntimeError):
    """Base class of robot failures; the message is meant for the user."""


class InvalidActionError(RobotError, ValueError):
    """An action of the wrong shape or with non-finite values; nothing was sent."""


class RobotStoppedError(RobotError):
    """The robot is stopped and refuses actions."""


class RobotTimeoutError(RobotError):
    """The controller did not answer in time."""


class RobotConnectionError(RobotError):
    """The controller cannot be reached (never answered, or went silent)."""


# The positive scalar limits of RobotLimits (the workspace box is the rest); config.py reads these names.
SCALAR_LIMIT_FIELDS = (
    "max_translation_m",
    "max_rotation_rad",
    "max_linear_speed_mps",
    "max_angular_speed_radps",
    "gripper_open_m",
    "max_gripper_speed_mps",
)


@dataclass(frozen=True)
class RobotLimits:
    workspace_min: tuple[float, float, float] = (-0.5, -0.5, 0.0)
    workspace_max: tuple[float, float, float] = (0.5, 0.5, 0.8)
    max_translation_m: float = 0.05  # per action
    max_rotation_rad: float = 0.5  # per action
    max_linear_speed_mps: float = 0.5
    max_angular_speed_radps: float = 2.0
    gripper_open_m: float = 0.04  # finger position when fully open
    max_gripper_speed_mps: float = 0.1

    def __post_init__(self) -> None:
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max)):
            raise ValueError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max}")
        for name in SCALAR_LIMIT_FIELDS:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class EpisodeStatus:
    """Where a robot that simulates a task stands: done once the task succeeded or its step limit was
    reached; ``success`` says which (None while unknown, and for robots without episodes)."""

    done: bool = False
    success: Optional[bool] = None


@dataclass(frozen=True)
class RobotState:
    proprio: np.ndarray  # (8,) float64
    status: RobotStatus
    timestamp_s: float  # clock of whoever produced the state
    actions_applied: int  # actions the controller has applied since it started

    @property
    def position(self) -> np.ndarray:
        return self.proprio[:3]

    @property
    def axis_angle(self) -> np.ndarray:
        return self.proprio[3:6]

    @property
    def fingers(self) -> np.ndarray:
        return self.proprio[6:8]


def check_action(action: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
    values = np.asarray(action, dtype=np.float64)
    if values.shape != (ACTION_DIM,):
        raise InvalidActionError(f"an action has {ACTION_DIM} values (dx, dy, dz, drx, dry, drz, gripper), got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise InvalidActionError(f"action has non-finite values: {values.tolist()}")
    return values


def clip_norm(vector: np.ndarray, limit: float) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector if norm <= limit else vector * (limit / norm)


def limit_action(action: np.ndarray, limits: RobotLimits, dt_s: Optional[float] = None) -> np.ndarray:
    """An action in metres/radians clipped: per-action step limits, and speed limits when dt is known.

    Translation and rotation are shortened along their own direction, never clipped per axis, so a
    limited motion still goes where the policy pointed.
    """
    values = check_action(action)
    translation_limit, rotation_limit = limits.max_translation_m, limits.max_rotation_rad
    if dt_s is not None:
        translation_limit = min(translation_limit, limits.max_linear_speed_mps * dt_s)
        rotation_limit = min(rotation_limit, limits.max_angular_speed_radps * dt_s)
    out = np.empty(ACTION_DIM)
    out[:3] = clip_norm(values[:3], translation_limit)
    out[3:6] = clip_norm(values[3:6], rotation_limit)
    out[6] = min(1.0, max(-1.0, values[6]))
    return out


class Robot(ABC):
    """A robot arm with a gripper, commanded by end-effector deltas."""

    def __init__(self, limits: RobotLimits, action_scale: tuple[float, float] = (1.0, 1.0)) -> None:
        if not all(s > 0 and math.isfinite(s) for s in action_scale):
            raise ValueError(f"action_scale must be positive, got {action_scale}")
        self.limits = limits
        self.action_scale = action_scale

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def read_state(self) -> RobotState: ...

    @abstractmethod
    def send_action(self, action: np.ndarray) -> RobotState:
        """Apply one 7-d action (metres, radians, gripper; within limits) and return the state after it."""

    @abstractmethod
    def hold(self) -> RobotState:
        """Keep the current pose (e.g. while the policy is late); the next action resumes motion."""

    @abstractmethod
    def stop(self) -> RobotState:
        """Halt; actions are refused afterwards until the robot is reset."""

    def episode_status(self) -> EpisodeStatus:
        """Asked by the control loop after each cycle's command; a done episode ends the run. A real
        arm never finishes; a robot that simulates a task (LIBERO) overrides this."""
        return EpisodeStatus()

    def __enter__(self: RT) -> RT:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
