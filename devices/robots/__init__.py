"""Robots: the Robot interface (8-d proprio state, 7-d delta action), a kinematic simulation, and a
ZeroMQ bridge to an external controller process."""

from rdvla.devices.robots.base import (
    InvalidActionError,
    Robot,
    RobotConnectionError,
    RobotError,
    RobotLimits,
    RobotState,
    RobotStatus,
    RobotStoppedError,
    RobotTimeoutError,
)
from rdvla.devices.robots.sim import SimRobot

__all__ = [
    "InvalidActionError",
    "Robot",
    "RobotConnectionError",
    "RobotError",
    "RobotLimits",
    "RobotState",
    "RobotStatus",
    "RobotStoppedError",
    "RobotTimeoutError",
    "SimRobot",
]
