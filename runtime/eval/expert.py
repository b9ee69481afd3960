"""A scripted expert standing in for the policy (`rdvla eval expert`): it answers each query from the
scene's true state, in the policy's conventions, so it runs through the loop like any policy."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from rdvla.devices.libero.experts import PickAndPlaceExpert, check_task
from rdvla.devices.libero.scene import LiberoScene
from rdvla.runtime.normalization import robot_ready
from rdvla.runtime.policy import PolicyResult

CHUNK = 8


class ExpertPolicy:
    def __init__(self, scene: LiberoScene) -> None:
        check_task(scene.task.suite.name, scene.task.index)  # refused before any episode
        self.scene = scene
        self._expert: Optional[PickAndPlaceExpert] = None
        self._episode = -1

    def act(self, instruction: str, proprio: Any, images: Any = None, gripper: str = "raw", **_: Any) -> PolicyResult:
        if self._episode != self.scene.episodes:
            self._expert = PickAndPlaceExpert(self.scene.task.suite.name, self.scene.task.index)
            self._episode = self.scene.episodes
        assert self._expert is not None
        action = self._expert.act(self.scene.observation())
        chunk = np.tile(action, (CHUNK, 1))
        # In the policy's convention (1 open, 0 closed), post-processed for the robot as any policy's chunk is.
        chunk[:, 6] = (1.0 - action[6]) / 2.0
        return PolicyResult(chunk, robot_ready(chunk, gripper), 0, stopped_by="expert", timings_ms={"total": 0.0})

    def close(self) -> None:
        """Nothing to release."""
