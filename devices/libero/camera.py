"""The LIBERO simulator as a camera kind: one of the scene's two cameras, as the policy sees it.

A frame is the scene's current render; its number is the scene's control step, and its time the
camera clock at the read (a stepped simulator has no other time), so a new frame exists after each
step and never before.
"""

from __future__ import annotations

import math
import time
from typing import Optional

from rdvla.devices.cameras.base import (
    Camera,
    CameraConnection,
    CameraDisconnectedError,
    CameraStatus,
    CameraTimeoutError,
    Clock,
    Frame,
)
from rdvla.devices.cameras.multi import MultiCamera
from rdvla.devices.libero.scene import LiberoScene
from rdvla.devices.libero.suites import ROLES


class LiberoCamera(Camera):
    def __init__(self, scene: LiberoScene, role: str, clock: Clock = time.monotonic) -> None:
        if role not in ROLES:
            raise ValueError(f"a LIBERO camera's role is one of {', '.join(ROLES)}, got {role!r}")
        super().__init__(f"libero:{role}", role, clock)
        self.scene = scene
        self._index = ROLES.index(role)
        self._connection = CameraConnection.DISCONNECTED
        self._frames = 0
        self._last_step: Optional[int] = None

    @property
    def connection(self) -> CameraConnection:
        return self._connection

    def status(self) -> CameraStatus:
        return CameraStatus(self._connection, self._frames, 0, None)

    def connect(self) -> None:
        self._connection = CameraConnection.STREAMING

    def disconnect(self) -> None:
        self._connection = CameraConnection.DISCONNECTED

    def _frame(self) -> Frame:
        if self._connection is not CameraConnection.STREAMING:
            raise CameraDisconnectedError(f"camera {self.name} is not connected")
        now = self.clock()
        self._frames += 1
        self._last_step = self.scene.steps
        return Frame(self.scene.images()[self._index], None, 0.0, 1e3 * now, "system_time", self.scene.steps, now, self.name)

    def read(self, timeout_s: float) -> Frame:
        if self._last_step == self.scene.steps:
            raise CameraTimeoutError(f"camera {self.name}: no new frame before the simulator steps")
        return self._frame()

    def read_latest(self, max_age_s: float) -> Frame:
        return self._frame()


def scene_cameras(scene: LiberoScene, clock: Clock) -> MultiCamera:
    """Both cameras of the scene as the loop's observation source, in the policy's order. Every frame is the
    scene's render at the current step, so no frame is old and none is apart from the other in time."""
    return MultiCamera([LiberoCamera(scene, role, clock) for role in ROLES], max_age_s=math.inf, max_skew_s=math.inf)
