"""BOUNDS_Q99 normalisation and un-normalisation against hand-computed values (spec 1.9, 3.5, 3.6)."""

from __future__ import annotations

import numpy as np
import pytest

from rdvla.runtime.normalization import NormStats, libero_gripper, normalize_proprio, unnormalize_actions

STATS = {
    "libero_goal_no_noops": {
        "action": {"q01": [-1.0, 0.0, -0.5, -0.2, -0.2, -0.2, 0.0], "q99": [1.0, 2.0, 0.5, 0.2, 0.2, 0.2, 1.0],
                   "mask": [True, True, True, True, True, True, False]},
        "proprio": {"q01": [0.0] * 8, "q99": [4.0] * 8},
    },
    "libero_10_no_noops": {
        "action": {"q01": [0.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7},
        "proprio": {"q01": [0.0] * 8, "q99": [1.0] * 8},
    },
}


def test_unnormalize_matches_hand_computed_values() -> None:
    stats = NormStats.from_dataset_statistics(STATS, "libero_goal_no_noops")
    normalized = np.array([[0.0, -1.0, 1.0, 0.5, -0.5, 2.0, 0.3]], np.float32)
    # 0.5 (a + 1)(q99 - q01 + 1e-8) + q01; the gripper (mask False) passes through; no clipping (2.0 stays).
    expected = np.array([[
        0.5 * 1.0 * (2.0 + 1e-8) - 1.0,
        0.0,
        0.5 * 2.0 * (1.0 + 1e-8) - 0.5,
        0.5 * 1.5 * (0.4 + 1e-8) - 0.2,
        0.5 * 0.5 * (0.4 + 1e-8) - 0.2,
        0.5 * 3.0 * (0.4 + 1e-8) - 0.2,
        0.3,
    ]], np.float32)
    np.testing.assert_allclose(unnormalize_actions(normalized, stats), expected, rtol=0, atol=1e-7)


def test_proprio_normalisation_clips() -> None:
    stats = NormStats.from_dataset_statistics(STATS, "libero_goal_no_noops")
    raw = np.array([0.0, 1.0, 2.0, 4.0, 8.0, -3.0, 3.0, 0.5])
    expected = np.clip(2 * raw / (4.0 + 1e-8) - 1, -1, 1)
    np.testing.assert_allclose(normalize_proprio(raw, stats), expected.astype(np.float32))
    assert normalize_proprio(raw, stats)[4] == 1.0 and normalize_proprio(raw, stats)[5] == -1.0


def test_key_selection() -> None:
    with pytest.raises(ValueError, match="libero_10_no_noops, libero_goal_no_noops"):
        NormStats.from_dataset_statistics(STATS)
    with pytest.raises(ValueError, match="not in dataset statistics"):
        NormStats.from_dataset_statistics(STATS, "bridge")
    only = {"libero_10_no_noops": STATS["libero_10_no_noops"]}
    assert NormStats.from_dataset_statistics(only).key == "libero_10_no_noops"


def test_shape_mismatch_is_refused() -> None:
    stats = NormStats.from_dataset_statistics(STATS, "libero_10_no_noops")
    with pytest.raises(ValueError, match="6 dims, the statistics expect 7"):
        unnormalize_actions(np.zeros((8, 6)), stats)
    with pytest.raises(ValueError, match="8"):
        normalize_proprio(np.zeros(7), stats)


def test_libero_gripper_binarises_then_inverts() -> None:
    actions = np.zeros((4, 7), np.float32)
    actions[:, -1] = [0.9, 0.1, 0.5, 0.51]
    out = libero_gripper(actions)
    np.testing.assert_array_equal(out[:, -1], [-1.0, 1.0, 0.0, -1.0])
    assert actions[0, -1] == np.float32(0.9)  # input untouched
