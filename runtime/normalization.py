"""Proprio normalisation and action un-normalisation with BOUNDS_Q99 statistics (spec 1.9, 3.5, 3.6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

# Added to the q99 - q01 range by the authors' code on both sides (train normalise, test un-normalise).
RANGE_EPS = 1e-8


@dataclass(frozen=True)
class NormStats:
    """The statistics of one dataset key of `dataset_statistics.json`."""

    key: str
    action_q01: np.ndarray
    action_q99: np.ndarray
    action_mask: np.ndarray
    proprio_q01: np.ndarray
    proprio_q99: np.ndarray

    @classmethod
    def from_dataset_statistics(cls, stats: Mapping[str, Any], key: Optional[str] = None) -> "NormStats":
        """Pick `key` (default: the only key) and read its action/proprio q01, q99 and mask."""
        if not isinstance(stats, Mapping):
            raise ValueError(f"the dataset statistics are a {type(stats).__name__}, expected an object of dataset keys")
        keys = sorted(str(k) for k in stats)
        if key is None:
            if len(keys) != 1:
                raise ValueError(
                    f"the dataset statistics hold {len(keys)} dataset keys; choose one with --unnorm-key: {', '.join(keys)}"
                )
            key = keys[0]
        if key not in stats:
            raise ValueError(f"unnorm key {key!r} not in dataset statistics; available: {', '.join(keys)}")
        entry = stats[key]
        try:
            action, proprio = entry["action"], entry["proprio"]
            q01, q99 = np.asarray(action["q01"], np.float64), np.asarray(action["q99"], np.float64)
            mask = np.asarray(action.get("mask", [True] * len(q01)), bool)
            p01, p99 = np.asarray(proprio["q01"], np.float64), np.asarray(proprio["q99"], np.float64)
        except KeyError as exc:
            raise ValueError(f"dataset statistics {key!r} lack field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError):
            raise ValueError(f"dataset statistics {key!r}: action and proprio must be objects whose q01 and q99 are "
                             "lists of numbers") from None
        if not (q01.shape == q99.shape == mask.shape and q01.ndim == 1):
            raise ValueError(f"dataset statistics {key!r}: action q01/q99/mask shapes differ")
        if not (p01.shape == p99.shape and p01.ndim == 1):
            raise ValueError(f"dataset statistics {key!r}: proprio q01/q99 shapes differ")
        for name, low, high in (("action", q01, q99), ("proprio", p01, p99)):
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise ValueError(f"dataset statistics {key!r}: {name} q01/q99 hold NaN or inf; the statistics are broken")
            if (high < low).any():
                raise ValueError(f"dataset statistics {key!r}: {name} q99 lies below q01")
        return cls(key, q01, q99, mask, p01, p99)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": {"q01": self.action_q01.tolist(), "q99": self.action_q99.tolist(), "mask": self.action_mask.tolist()},
            "proprio": {"q01": self.proprio_q01.tolist(), "q99": self.proprio_q99.tolist()},
        }


def normalize_proprio(proprio: np.ndarray, stats: NormStats) -> np.ndarray:
    """clip(2 (p - q01) / (q99 - q01 + 1e-8) - 1, -1, 1) on every dimension (proprio carries no mask)."""
    p = np.asarray(proprio, np.float64)
    if p.shape[-1] != stats.proprio_q01.shape[0]:
        raise ValueError(f"proprio has {p.shape[-1]} values, the statistics expect {stats.proprio_q01.shape[0]}")
    span = stats.proprio_q99 - stats.proprio_q01 + RANGE_EPS
    return np.clip(2.0 * (p - stats.proprio_q01) / span - 1.0, -1.0, 1.0).astype(np.float32)


# How far beyond the dataset's q01..q99 a proprio value may lie, in widths of that range, before it is taken for
# a mistake (millimetres for metres, degrees for radians, dimensions out of order) rather than an unusual pose:
# normalisation clips it to the range's edge, so the policy would act on a state the robot is not in.
FAR_OUTSIDE_RANGES = 10.0


def far_outside_range(proprio: np.ndarray, stats: NormStats) -> list[int]:
    """The dimensions of `proprio` more than FAR_OUTSIDE_RANGES widths outside q01..q99. A dimension the dataset
    never moved (q01 == q99) has no width to judge by and is not reported."""
    p = np.asarray(proprio, np.float64)
    width = stats.proprio_q99 - stats.proprio_q01
    beyond = np.maximum(stats.proprio_q01 - p, p - stats.proprio_q99)
    return [int(i) for i in np.flatnonzero((width > 0) & (beyond > FAR_OUTSIDE_RANGES * width))]


def unnormalize_actions(normalized: np.ndarray, stats: NormStats) -> np.ndarray:
    """a = 0.5 (a_n + 1)(q99 - q01 + 1e-8) + q01 where the mask is set, a_n elsewhere; no clipping."""
    a = np.asarray(normalized, np.float64)
    if a.shape[-1] != stats.action_q01.shape[0]:
        raise ValueError(f"actions have {a.shape[-1]} dims, the statistics expect {stats.action_q01.shape[0]}")
    span = stats.action_q99 - stats.action_q01 + RANGE_EPS
    return np.where(stats.action_mask, 0.5 * (a + 1.0) * span + stats.action_q01, a).astype(np.float32)


def action_span(stats: NormStats) -> np.ndarray:
    """d(action) / d(normalised action) per dimension: 0.5 (q99 - q01 + eps) where normalised, 1 elsewhere."""
    return np.where(stats.action_mask, 0.5 * (stats.action_q99 - stats.action_q01 + RANGE_EPS), 1.0)


GRIPPERS = ("libero", "raw")  # how the gripper dimension reaches the robot (`robot_ready`)


def robot_ready(actions: np.ndarray, gripper: str) -> np.ndarray:
    """Un-normalised actions as the robot takes them: `libero` post-processes the gripper dimension
    (`libero_gripper`, spec 3.6), `raw` passes it on as predicted."""
    if gripper not in GRIPPERS:
        raise ValueError(f"unknown gripper post-processing {gripper!r}; choose libero or raw")
    return libero_gripper(actions) if gripper == "libero" else actions


def libero_gripper(actions: np.ndarray) -> np.ndarray:
    """LIBERO post-processing of the last dim: binarise g -> sign(2g - 1) (0.5 -> 0), then invert."""
    out = np.array(actions, dtype=np.float32, copy=True)
    out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
    return out
