"""`Policy` (hence `rdvla run` and `rdvla predict`) preprocesses with the native extension by default, and
its actions are bit for bit those of the numpy preprocessing on the demo's recorded scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rdvla.devices.cameras.realsense.synthetic import scene
from rdvla.runtime.halting import AdjacentMSE
from rdvla.runtime.policy import Policy

pytest.importorskip("rdvla._native", reason="the native extension is not built (CI builds it)")


def test_native_is_the_default_and_changes_no_action(tiny_bundle: Path) -> None:
    policy = Policy.load(tiny_bundle)
    try:
        assert policy.preprocessing == "native"
        frames = zip(scene("third_person", 6), scene("wrist", 6))
        proprio = (policy.bundle.norm_stats.proprio_q01 + policy.bundle.norm_stats.proprio_q99) / 2
        for n, (third, wrist) in enumerate(frames):
            results = {}
            for implementation in ("native", "numpy"):
                policy.preprocessing = implementation
                results[implementation] = policy.act("put the black bowl on the plate", proprio, images=[third, wrist],
                                                     halting=AdjacentMSE(1e-3), seed=n)
            assert np.array_equal(results["native"].actions, results["numpy"].actions), f"frame {n}"
            assert results["native"].iterations == results["numpy"].iterations
    finally:
        policy.close()
