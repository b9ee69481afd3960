"""The LIBERO robot kind's disturbance (`ActionNoise`): what the controller receives, never what is logged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rdvla.devices.libero.robot import ACTION_SCALE, ActionNoise, LiberoRobot


class StepRecorder:
    """Stands in for LiberoScene: keeps the controller inputs it is stepped with."""

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []
        self.steps = 0
        self.done = False
        self.success = False

    def step(self, values: np.ndarray) -> None:
        self.inputs.append(values.copy())
        self.steps += 1

    def proprio(self) -> np.ndarray:
        return np.zeros(8)


def test_noise_is_seeded_correlated_and_of_the_asked_size() -> None:
    noise = ActionNoise(0.3, seed=5)
    series = np.array([noise.next() for _ in range(40000)])
    again = ActionNoise(0.3, seed=5)
    assert np.array_equal(series[:100], np.array([again.next() for _ in range(100)]))
    assert not np.array_equal(series[:100], np.array([ActionNoise(0.3, seed=6).next() for _ in range(100)]))
    assert np.allclose(series.std(axis=0), 0.3, rtol=0.1)
    lag1 = [np.corrcoef(series[:-1, k], series[1:, k])[0, 1] for k in range(3)]
    assert np.allclose(lag1, ActionNoise.CORRELATION, atol=0.02)
    with pytest.raises(ValueError, match="sigma must be positive"):
        ActionNoise(0.0, seed=0)


def _robot(noise: ActionNoise | None) -> tuple[LiberoRobot, StepRecorder]:
    scene: Any = StepRecorder()
    robot = LiberoRobot(scene, noise)
    robot.connect()
    return robot, scene


def test_the_controller_gets_the_action_plus_noise_scaled_by_the_commanded_speed() -> None:
    moving = np.array([ACTION_SCALE[0], 0.0, 0.0, 0.1, 0.0, 0.0, 1.0])  # full speed along x, a turn, gripper closing
    still = np.array([0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 1.0])
    clean, clean_scene = _robot(None)
    noisy, noisy_scene = _robot(ActionNoise(0.3, seed=1))
    reference = ActionNoise(0.3, seed=1)
    for action in (moving, still, moving):
        clean.send_action(action)
        noisy.send_action(action)
    expected_first = np.clip(clean_scene.inputs[0][:3] + reference.next(), -1.0, 1.0)
    assert np.allclose(noisy_scene.inputs[0][:3], expected_first)
    assert not np.allclose(noisy_scene.inputs[0][:3], clean_scene.inputs[0][:3])
    # No commanded translation, no disturbance: an arm sent to hold still stays where it is sent.
    assert np.array_equal(noisy_scene.inputs[1], clean_scene.inputs[1])
    # Rotation and gripper are never disturbed.
    for got, want in zip(noisy_scene.inputs, clean_scene.inputs):
        assert np.array_equal(got[3:], want[3:])
