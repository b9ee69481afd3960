"""The LIBERO simulator as a robot kind: each action is one control step of the scene's Panda arm.

Actions arrive in metres and radians (the safety filter converted the policy's units with
`ACTION_SCALE`) and go to the simulator in its controller's units: the operational-space controller
maps an input of 1.0 to 0.05 m and 0.5 rad and clips each axis to [-1, 1]; gripper -1 open / +1 close. A hold
steps the scene with no motion (a simulator's world does not pause for a late policy). The episode is
done when the task succeeds or the suite's step limit is reached.

An optional `ActionNoise` disturbs the translation the controller receives, not what the loop logs: the
step log keeps the action the policy proposed, the arm does something slightly different. Recorded with a
scripted expert, such episodes are demonstrations that leave the expert's path and come back to it (the
idea of DART, Laskey et al. 2017), the states a cloned policy's own small errors lead to.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from rdvla.devices.libero.scene import LiberoScene
from rdvla.devices.robots.base import (
    EpisodeStatus,
    Robot,
    RobotConnectionError,
    RobotLimits,
    RobotState,
    RobotStatus,
    RobotStoppedError,
    check_action,
)

ACTION_SCALE = (0.05, 0.5)  # robosuite OSC_POSE output_max: metres and radians per unit of action
CONTROL_RATE_HZ = 20.0  # LIBERO's control_freq
_REACH = math.sqrt(3.0)  # the controller clips each axis to [-1, 1]: the largest step is the cube's diagonal
# The controller's own range, so the safety filter never alters an action the simulator would accept.
LIBERO_LIMITS = RobotLimits(
    workspace_min=(-2.0, -2.0, 0.0),
    workspace_max=(2.0, 2.0, 3.0),
    max_translation_m=ACTION_SCALE[0] * _REACH,
    max_rotation_rad=ACTION_SCALE[1] * _REACH,
    max_linear_speed_mps=ACTION_SCALE[0] * _REACH * CONTROL_RATE_HZ,
    max_angular_speed_radps=ACTION_SCALE[1] * _REACH * CONTROL_RATE_HZ,
    gripper_open_m=0.04,
    max_gripper_speed_mps=1.0,
)


class ActionNoise:
    """Gaussian noise on the three translation inputs (controller units), correlated over steps: AR(1) with
    coefficient `CORRELATION`, stationary standard deviation `sigma`. White noise of the same size is
    averaged away by the controller in a few steps; correlated noise carries the arm centimetres off the
    path for the expert to correct, as a policy's drift would. The robot scales it by the commanded speed
    (norm of the translation input, at most 1): a tracking error grows with speed, and an arm sent to a
    grasp point still settles there."""

    CORRELATION = 0.9

    def __init__(self, sigma: float, seed: int) -> None:
        if not sigma > 0:
            raise ValueError(f"action noise: sigma must be positive, got {sigma}")
        self.sigma = sigma
        self._rng = np.random.default_rng(seed)
        self._value = self._rng.normal(0.0, sigma, 3)

    def next(self) -> np.ndarray:
        rho = self.CORRELATION
        self._value = rho * self._value + math.sqrt(1.0 - rho * rho) * self._rng.normal(0.0, self.sigma, 3)
        return self._value


class LiberoRobot(Robot):
    def __init__(self, scene: LiberoScene, noise: Optional[ActionNoise] = None) -> None:
        super().__init__(LIBERO_LIMITS, ACTION_SCALE)
        self.scene = scene
        self.noise = noise
        self._connected = False
        self._status = RobotStatus.READY
        self._applied = 0
        self._gripper = -1.0  # the settle steps leave it open

    def connect(self) -> None:
        self._connected = True

    def close(self) -> None:
        self._connected = False

    def _state(self) -> RobotState:
        if not self._connected:
            raise RobotConnectionError("the LIBERO robot is not connected (call connect())")
        return RobotState(self.scene.proprio(), self._status, float(self.scene.steps), self._applied)

    def read_state(self) -> RobotState:
        return self._state()

    def send_action(self, action: np.ndarray) -> RobotState:
        if self._status == RobotStatus.STOPPED:
            raise RobotStoppedError("the LIBERO robot is stopped; reset the scene before sending actions")
        values = check_action(action).copy()
        values[:3] /= ACTION_SCALE[0]
        values[3:6] /= ACTION_SCALE[1]
        if self.noise is not None:
            values[:3] += self.noise.next() * min(1.0, float(np.linalg.norm(values[:3])))
        values = np.clip(values, -1.0, 1.0)
        self._state()
        self.scene.step(values)
        self._gripper = float(values[6])
        self._applied += 1
        self._status = RobotStatus.READY
        return self._state()

    def hold(self) -> RobotState:
        if self._status != RobotStatus.STOPPED and not self.scene.done:
            self._state()
            self.scene.step(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, self._gripper]))
            self._status = RobotStatus.HOLDING
        return self._state()

    def stop(self) -> RobotState:
        self._status = RobotStatus.STOPPED
        return self._state()

    def episode_status(self) -> EpisodeStatus:
        return EpisodeStatus(done=self.scene.done, success=self.scene.success)
