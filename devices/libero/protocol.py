"""The authors' LIBERO evaluation protocol (shared/rdvla_spec.md 1.1, 3.5, 3.6): what the policy sees of the
simulator, and how its actions go back. Pure numpy, so tests can compare it with the simulator's arrays."""

from __future__ import annotations

import math

import numpy as np


def policy_image(observation_image: np.ndarray) -> np.ndarray:
    """A camera image as the policy was trained on it: robosuite's observation image rotated 180 degrees."""
    return np.ascontiguousarray(observation_image[::-1, ::-1])


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """robosuite's formula: quaternion (x, y, z, w) -> axis-angle (3,), w clipped to [-1, 1]."""
    w = min(max(float(quat[3]), -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.asarray(quat[:3], np.float64) * 2.0 * math.acos(w) / den


def proprio(eef_pos: np.ndarray, eef_quat: np.ndarray, gripper_qpos: np.ndarray) -> np.ndarray:
    """The 8-d proprio: end-effector position (3), its orientation as axis-angle (3), the finger positions (2)."""
    return np.concatenate([np.asarray(eef_pos, np.float64), quat2axisangle(eef_quat), np.asarray(gripper_qpos, np.float64)])
