"""The safety filter's limits and the fault rules that decide hold and stop."""

from __future__ import annotations

import numpy as np
import pytest

from rdvla.devices.robots.base import RobotLimits
from rdvla.runtime.control.faults import Fault, FaultMonitor
from rdvla.runtime.control.safety import SafetyConfig, SafetyFilter

PERIOD = 0.1
LIMITS = RobotLimits(workspace_min=(-0.5, -0.5, 0.0), workspace_max=(0.5, 0.5, 0.8), max_translation_m=0.02,
                     max_rotation_rad=0.15, max_linear_speed_mps=0.5, max_angular_speed_radps=5.0)
ORIGIN = np.array([0.0, 0.0, 0.4])


def make_filter(linear_accel: float = 100.0, angular_accel: float = 1000.0, scale: tuple[float, float] = (0.05, 0.5)) -> SafetyFilter:
    return SafetyFilter(LIMITS, scale, PERIOD, SafetyConfig(max_linear_accel_mps2=linear_accel, max_angular_accel_radps2=angular_accel))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_actions_are_rejected(bad: float) -> None:
    action = np.zeros(7)
    action[4] = bad
    filtered = make_filter().apply(action, ORIGIN)
    assert filtered.action is None and "non-finite" in (filtered.rejected or "")


def test_steps_are_shortened_along_their_direction_in_metres_and_radians() -> None:
    filtered = make_filter().apply(np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, -1.0]), ORIGIN)  # 7 cm and 0.5 rad asked
    assert filtered.action is not None
    translation = filtered.action[:3]
    assert np.linalg.norm(translation) == pytest.approx(0.02)
    assert translation[0] == pytest.approx(translation[1])  # same direction
    assert np.linalg.norm(filtered.action[3:6]) == pytest.approx(0.15)
    assert set(filtered.limits) == {"translation", "rotation"}


def test_speed_limits_apply_per_period() -> None:
    slow = SafetyFilter(LIMITS, (1.0, 1.0), PERIOD, SafetyConfig(max_linear_accel_mps2=100.0))
    assert slow.max_translation == pytest.approx(0.02)  # min(0.02 per action, 0.5 m/s * 0.1 s)
    fast = SafetyFilter(LIMITS, (1.0, 1.0), 0.01, SafetyConfig(max_linear_accel_mps2=100.0))
    assert fast.max_translation == pytest.approx(0.005)  # 0.5 m/s at 100 Hz


def test_acceleration_limit_ramps_motion_up_from_rest_and_after_a_hold() -> None:
    f = make_filter(linear_accel=1.0)  # 1 m/s^2 at 10 Hz: the step may change by 1 cm per cycle
    wanted = np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])  # 2 cm per step
    steps = [f.apply(wanted, ORIGIN).action[0] for _ in range(3)]
    assert steps == pytest.approx([0.01, 0.02, 0.02])
    f.at_rest()
    first = f.apply(wanted, ORIGIN)
    assert first.action[0] == pytest.approx(0.01) and "linear_accel" in first.limits


def test_target_is_kept_inside_the_workspace() -> None:
    near_wall = np.array([0.49, 0.0, 0.4])
    filtered = make_filter().apply(np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), near_wall)
    assert filtered.action[0] == pytest.approx(0.01)
    assert "workspace" in filtered.limits


def test_gripper_command_is_clipped_and_a_clean_action_passes_unchanged() -> None:
    f = make_filter()
    assert f.apply(np.array([0, 0, 0, 0, 0, 0, 3.0]), ORIGIN).action[6] == 1.0
    clean = np.array([0.1, -0.1, 0.05, 0.01, 0.0, -0.02, -1.0])
    filtered = make_filter().apply(clean, ORIGIN)
    np.testing.assert_allclose(filtered.action, clean * [0.05, 0.05, 0.05, 0.5, 0.5, 0.5, 1.0])  # metres, radians
    assert filtered.limits == ()


def test_counted_faults_stop_after_the_configured_run_and_reset_on_a_clean_step() -> None:
    monitor = FaultMonitor(SafetyConfig(max_consecutive_faults=3))
    assert monitor.update({Fault.INFERENCE_ERROR}, 0.0) is None
    assert monitor.update({Fault.INFERENCE_ERROR}, 0.1) is None
    assert monitor.update(set(), 0.2) is None  # a clean step: the run starts over
    assert monitor.update({Fault.INFERENCE_ERROR, Fault.OVERRUN}, 0.3) is None
    assert monitor.update({Fault.INFERENCE_ERROR}, 0.4) is None
    assert monitor.update({Fault.INFERENCE_ERROR}, 0.5) == "inference_error in 3 consecutive steps"
    assert monitor.totals == {"inference_error": 5, "overrun": 1}


def test_robot_faults_stop_at_once_and_a_reconnecting_camera_has_a_time_limit() -> None:
    assert FaultMonitor(SafetyConfig()).update({Fault.ROBOT_TIMEOUT}, 0.0) == "robot_timeout"
    monitor = FaultMonitor(SafetyConfig(max_consecutive_faults=2, max_reconnect_s=1.0))
    for t in (0.0, 0.5, 0.9):  # many consecutive steps: a reconnection is not counted like other faults
        assert monitor.update({Fault.CAMERA_DISCONNECTED}, t) is None
    assert monitor.update({Fault.CAMERA_DISCONNECTED}, 1.0) == "camera disconnected for 1.0 s"
    monitor.update(set(), 1.1)
    assert monitor.update({Fault.CAMERA_DISCONNECTED}, 1.2) is None  # a new disconnection, a new allowance


def test_bad_safety_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_linear_accel"):
        SafetyConfig(max_linear_accel_mps2=0.0)
    with pytest.raises(ValueError, match="max_consecutive_faults"):
        SafetyConfig(max_consecutive_faults=0)
