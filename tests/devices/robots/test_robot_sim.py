"""The kinematic SimRobot: state layout, limits, gripper, hold/stop, determinism under a fake clock."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rdvla.devices.robots.base import (
    InvalidActionError,
    RobotConnectionError,
    RobotLimits,
    RobotStatus,
    RobotStoppedError,
    limit_action,
)
from rdvla.devices.robots.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from rdvla.devices.robots.sim import SimRobot
from rdvla.devices.testing import FakeClock

LIMITS = RobotLimits(
    workspace_min=(0.0, -0.5, 0.0),
    workspace_max=(1.0, 0.5, 1.0),
    max_translation_m=0.05,
    max_rotation_rad=0.5,
    max_linear_speed_mps=0.5,
    max_angular_speed_radps=2.0,
    gripper_open_m=0.04,
    max_gripper_speed_mps=0.1,
)


def robot(clock: FakeClock, **kwargs: object) -> SimRobot:
    sim = SimRobot(LIMITS, clock=clock, **kwargs)  # type: ignore[arg-type]
    sim.connect()
    return sim


def action(*values: float) -> np.ndarray:
    out = np.zeros(7)
    out[: len(values)] = values
    return out


def test_state_layout_starts_centred_pointing_down_and_open(fake_clock: FakeClock) -> None:
    state = robot(fake_clock).read_state()
    assert state.proprio.shape == (8,)
    np.testing.assert_allclose(state.position, [0.5, 0.0, 0.5])
    np.testing.assert_allclose(np.abs(state.axis_angle), [math.pi, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(state.fingers, [0.04, -0.04])
    assert state.status == RobotStatus.READY and state.actions_applied == 0


def test_translation_is_step_and_speed_limited_along_its_direction(fake_clock: FakeClock) -> None:
    sim = robot(fake_clock)
    first = sim.send_action(action(3.0, 4.0, 0.0))  # 5 m asked: the first step is capped at 0.05 m
    np.testing.assert_allclose(first.position - [0.5, 0.0, 0.5], [0.03, 0.04, 0.0], atol=1e-12)
    fake_clock.advance(0.02)  # 0.5 m/s for 20 ms: 0.01 m
    second = sim.send_action(action(0.0, 0.0, 1.0))
    np.testing.assert_allclose(second.position - first.position, [0.0, 0.0, 0.01], atol=1e-12)
    same_instant = sim.send_action(action(0.0, 0.0, 1.0))
    np.testing.assert_allclose(same_instant.position, second.position)


def test_actions_are_metres_whatever_the_action_scale(fake_clock: FakeClock) -> None:
    sim = robot(fake_clock, action_scale=(0.01, 0.1))  # the loop's safety filter converts policy units, not the robot
    state = sim.send_action(action(0.01, 0.0, 0.0))
    assert state.position[0] == pytest.approx(0.51)


def test_workspace_clips_the_position(fake_clock: FakeClock) -> None:
    sim = robot(fake_clock, initial_position=(0.99, 0.0, 0.01))
    state = sim.send_action(action(0.05, 0.0, -0.05))
    np.testing.assert_allclose(state.position, [1.0, 0.0, 0.0])


def test_rotation_composes_in_the_base_frame(fake_clock: FakeClock) -> None:
    sim = robot(fake_clock)
    start = axis_angle_to_matrix(sim.read_state().axis_angle)
    state = sim.send_action(action(0, 0, 0, 0.0, 0.0, 0.2))
    expected = axis_angle_to_matrix(np.array([0.0, 0.0, 0.2])) @ start
    np.testing.assert_allclose(axis_angle_to_matrix(state.axis_angle), expected, atol=1e-9)
    big = sim.send_action(action(0, 0, 0, 0.0, 0.0, 3.0))  # no time has passed: the speed limit allows no turn
    np.testing.assert_allclose(axis_angle_to_matrix(big.axis_angle), expected, atol=1e-9)


def test_gripper_closes_at_its_speed_limit(fake_clock: FakeClock) -> None:
    sim = robot(fake_clock)
    sim.send_action(action(0, 0, 0, 0, 0, 0, -1.0))  # open: already open
    fake_clock.advance(0.1)  # 0.1 m/s for 0.1 s: 0.01 m per finger
    state = sim.send_action(action(0, 0, 0, 0, 0, 0, 1.0))
    np.testing.assert_allclose(state.fingers, [0.03, -0.03])
    fake_clock.advance(1.0)
    np.testing.assert_allclose(sim.send_action(action(0, 0, 0, 0, 0, 0, 1.0)).fingers, [0.0, 0.0], atol=1e-12)


def test_hold_and_stop(fake_clock: FakeClock) -> None:
    sim = robot(fake_clock)
    assert sim.hold().status == RobotStatus.HOLDING
    assert sim.send_action(action(0.01)).status == RobotStatus.READY
    stopped = sim.stop()
    assert stopped.status == RobotStatus.STOPPED
    with pytest.raises(RobotStoppedError):
        sim.send_action(action(0.01))
    assert sim.read_state().actions_applied == 1
    sim.reset()
    assert sim.send_action(action(0.01)).status == RobotStatus.READY


def test_invalid_actions_change_nothing(fake_clock: FakeClock) -> None:
    sim = robot(fake_clock)
    before = sim.read_state().proprio.copy()
    with pytest.raises(InvalidActionError, match="7 values"):
        sim.send_action(np.zeros(6))
    with pytest.raises(InvalidActionError, match="non-finite"):
        sim.send_action(action(float("nan")))
    np.testing.assert_array_equal(sim.read_state().proprio, before)


def test_not_connected_refuses() -> None:
    with pytest.raises(RobotConnectionError):
        SimRobot().read_state()


def test_same_clock_same_trajectory() -> None:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(200, 7)) * [0.03, 0.03, 0.03, 0.2, 0.2, 0.2, 1.0]
    runs = []
    for _ in range(2):
        clock = FakeClock()
        sim = robot(clock)
        states = []
        for a in actions:
            clock.advance(0.1)
            states.append(sim.send_action(a).proprio)
        runs.append(np.array(states))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.all(runs[0][:, :3] >= LIMITS.workspace_min) and np.all(runs[0][:, :3] <= LIMITS.workspace_max)


def test_limit_action_keeps_direction_and_clips_gripper() -> None:
    limited = limit_action(action(0.3, 0.4, 0.0, 0.0, 0.0, 2.0, 5.0), LIMITS, dt_s=None)
    np.testing.assert_allclose(limited, [0.03, 0.04, 0.0, 0.0, 0.0, 0.5, 1.0])


@pytest.mark.parametrize("angle", [0.0, 1e-9, 0.3, 2.0, math.pi - 1e-6, math.pi])
def test_axis_angle_round_trip(angle: float) -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        matrix = axis_angle_to_matrix(axis * angle)
        back = matrix_to_axis_angle(matrix)
        np.testing.assert_allclose(axis_angle_to_matrix(back), matrix, atol=1e-9)
        assert np.linalg.norm(back) <= math.pi + 1e-9
