"""Calibration's drift report stops the queries with the halting rule it is given, cosine as well as MSE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rdvla.calibration.report import Traces, stop_drift, threshold_sweep
from rdvla.runtime.halting import AdjacentMSE, CosineSimilarity

NAN = math.nan


def traces(turn_stops_at: list[int]) -> Traces:
    """Per query: consecutive actions keep a large MSE, and stop turning (1 - cos = 1e-5) from the given iteration."""
    mse = np.full((len(turn_stops_at), 32), 0.1, np.float32)
    cosine = np.full((len(turn_stops_at), 32), 0.9, np.float32)
    for q, k in enumerate(turn_stops_at):
        cosine[q, k - 1:] = 1.0 - 1e-5
    mse[:, 0] = cosine[:, 0] = NAN
    return Traces(mse, cosine)


def test_the_drift_report_honours_a_cosine_rule() -> None:
    reference, lower = traces([4, 6, 9]), traces([5, 6, 12])
    cosine = CosineSimilarity(0.999)
    drift = stop_drift(lower.stops(cosine), reference.stops(cosine))
    assert (drift["stops"], drift["drift"]) == ([5, 6, 12], [1, 0, 3])
    # The MSE never falls below its threshold: an MSE-only report would see every query run to the cap.
    assert lower.stops(AdjacentMSE(1e-3)) == [32, 32, 32]
    medians = lower.delta_medians(cosine)  # the rule's delta, 1 - cos, not the MSE (a flat 0.1)
    assert medians[0] is None and medians[1] == pytest.approx(0.1, rel=1e-5) and medians[-1] == pytest.approx(1e-5, rel=1e-2)


def test_the_threshold_sweep_scales_the_cosine_bound() -> None:
    reference, lower = traces([4, 6, 9]), traces([5, 6, 12])
    sweep = threshold_sweep(CosineSimilarity(0.999), lower, reference)
    # 1 - cos bounds of 1e-2, 1e-3, 1e-4, 1e-5: the last is not met (1 - cos = 1e-5 is not below it).
    assert list(sweep) == ["0.99", "0.999", "0.9999", "0.99999"]
    assert sweep["0.999"]["stops"] == [5, 6, 12] and sweep["0.99999"]["stops"] == [32, 32, 32]
