"""A kinematic arm: the pose moves exactly by each (limited) action. Deterministic under a given clock."""

from __future__ import annotations

import logging
import math
import time
from typing import Optional, Sequence

import numpy as np

from rdvla.devices.robots.base import (
    Clock,
    Robot,
    RobotConnectionError,
    RobotLimits,
    RobotState,
    RobotStatus,
    RobotStoppedError,
    limit_action,
)
from rdvla.devices.robots.rotations import axis_angle_to_matrix, matrix_to_axis_angle

log = logging.getLogger(__name__)

POINTING_DOWN = (math.pi, 0.0, 0.0)


class SimRobot(Robot):
    """Position, orientation and gripper integrate the actions, clipped to the workspace and the
    step and speed limits (speed over the time since the previous action, read from ``clock``)."""

    def __init__(
        self,
        limits: RobotLimits = RobotLimits(),
        *,
        action_scale: tuple[float, float] = (1.0, 1.0),
        initial_position: Optional[Sequence[float]] = None,
        initial_axis_angle: Sequence[float] = POINTING_DOWN,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(limits, action_scale)
        low, high = np.array(limits.workspace_min), np.array(limits.workspace_max)
        start = (low + high) / 2 if initial_position is None else np.asarray(initial_position, dtype=np.float64)
        if start.shape != (3,) or np.any(start < low) or np.any(start > high):
            raise ValueError(f"initial position {start.tolist()} is outside the workspace {low.tolist()}..{high.tolist()}")
        self._initial = (start.copy(), axis_angle_to_matrix(np.asarray(initial_axis_angle, dtype=np.float64)))
        self.clock = clock
        self._connected = False
        self.reset()

    def reset(self) -> None:
        """Back to the initial pose with the gripper open, ready for actions."""
        self._position = self._initial[0].copy()
        self._rotation = self._initial[1].copy()
        self._opening = self.limits.gripper_open_m  # per finger
        self._status = RobotStatus.READY
        self._last_action_time: Optional[float] = None
        self._applied = 0

    def connect(self) -> None:
        self._connected = True

    def close(self) -> None:
        self._connected = False

    def _require_connection(self) -> None:
        if not self._connected:
            raise RobotConnectionError("the simulated robot is not connected (call connect())")

    def _state(self) -> RobotState:
        proprio = np.concatenate([self._position, matrix_to_axis_angle(self._rotation), [self._opening, -self._opening]])
        return RobotState(proprio, self._status, self.clock(), self._applied)

    def read_state(self) -> RobotState:
        self._require_connection()
        return self._state()

    def send_action(self, action: np.ndarray) -> RobotState:
        self._require_connection()
        if self._status == RobotStatus.STOPPED:
            raise RobotStoppedError("the robot is stopped; reset it before sending actions")
        now = self.clock()
        dt = None if self._last_action_time is None else max(0.0, now - self._last_action_time)
        step = limit_action(action, self.limits, dt)
        self._position = np.clip(self._position + step[:3], self.limits.workspace_min, self.limits.workspace_max)
        self._rotation = axis_angle_to_matrix(step[3:6]) @ self._rotation  # deltas are in the base frame
        target = (1.0 - step[6]) / 2.0 * self.limits.gripper_open_m
        travel = target - self._opening
        if dt is not None:
            travel = float(np.clip(travel, -self.limits.max_gripper_speed_mps * dt, self.limits.max_gripper_speed_mps * dt))
        self._opening += travel
        self._last_action_time = now
        self._status = RobotStatus.READY
        self._applied += 1
        return self._state()

    def hold(self) -> RobotState:
        self._require_connection()
        if self._status != RobotStatus.STOPPED:
            self._status = RobotStatus.HOLDING
            self._last_action_time = None  # a hold is a pause: speed limits restart from rest
        return self._state()

    def stop(self) -> RobotState:
        self._require_connection()
        if self._status != RobotStatus.STOPPED:
            log.warning("simulated robot stopped")
        self._status = RobotStatus.STOPPED
        return self._state()
