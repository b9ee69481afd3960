"""Axis-angle <-> rotation matrix, in numpy, with the angle kept in [0, pi] (robosuite's quat2axisangle with w >= 0)."""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-12


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle < _EPS:
        return np.eye(3)
    x, y, z = np.asarray(rotvec, dtype=np.float64) / angle
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """(x, y, z, w) with w >= 0, by the numerically stable largest-diagonal branch."""
    m = np.asarray(matrix, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax([m[0, 0], m[1, 1], m[2, 2]]))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], _EPS))
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    q = matrix_to_quaternion(matrix)
    w = min(1.0, q[3])
    sin_half = math.sqrt(max(0.0, 1.0 - w * w))
    if sin_half < _EPS:
        return np.zeros(3)
    return q[:3] * (2.0 * math.acos(w) / sin_half)
