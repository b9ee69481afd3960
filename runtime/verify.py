"""Golden-case verification of a bundle on any backend: actions per iteration count and halting agreement.

Used by `rdvla export` (ONNX Runtime, right after export) and by `rdvla verify` on the robot
(TensorRT engines), with the gates of `runtime.gates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from rdvla.runtime.gates import Gate
from rdvla.runtime.golden import GoldenCase
from rdvla.runtime.halting import AdjacentMSE, FixedIterations, HaltingRule
from rdvla.runtime.policy import NonFiniteActions, Policy

FIXED_ITERATIONS = (1, 4, 12, 32)
MSE_THRESHOLDS = (1e-3, 1e-4)


def verification_modes() -> list[tuple[str, HaltingRule]]:
    modes: list[tuple[str, HaltingRule]] = [(f"fixed_{k}", FixedIterations(k)) for k in FIXED_ITERATIONS]
    return modes + [(f"mse_{t:g}", AdjacentMSE(t)) for t in MSE_THRESHOLDS]


def error(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """max |ours - ref| and that divided by max |ref| (see runtime.gates); infinite when either holds
    NaN or inf, so that no gate can pass on garbage."""
    if not (np.isfinite(ours).all() and np.isfinite(ref).all()):
        return {"max_abs": math.inf, "max_rel": math.inf}
    diff = float(np.abs(ours.astype(np.float64) - ref).max())
    return {"max_abs": diff, "max_rel": diff / max(float(np.abs(ref).max()), 1e-30)}


def worst(values: Iterable[float]) -> float:
    """The largest error, or inf when any is not finite (the builtin max skips a NaN that is not first)."""
    listed = [float(v) for v in values]
    return math.inf if not all(math.isfinite(v) for v in listed) else max(listed, default=0.0)


@dataclass
class ModeResult:
    max_abs: float = 0.0
    max_rel: float = 0.0
    # Un-normalised actions against the reference's, made with the statistics of the export and
    # divided by their scale (normalised units): edited statistics show here and nowhere else.
    unnormalized_max_abs: float = 0.0
    iterations: list[int] = field(default_factory=list)
    reference_iterations: list[int] = field(default_factory=list)

    @property
    def iteration_agreement(self) -> float:
        return float(np.mean([a == b for a, b in zip(self.iterations, self.reference_iterations)]))

    def to_json(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "unnormalized_max_abs": self.unnormalized_max_abs,
                "iterations": self.iterations, "reference_iterations": self.reference_iterations,
                "iteration_agreement": self.iteration_agreement}


def verify_actions(policy: Policy, cases: list[GoldenCase]) -> dict[str, ModeResult]:
    """Run every verification mode on every case through `policy`; worst errors per mode."""
    results: dict[str, ModeResult] = {}
    for case in cases:
        for mode, halting in verification_modes():
            ref_actions, ref_k = case.reference(halting)
            entry = results.setdefault(mode, ModeResult())
            try:
                out = policy.act(case.instruction, case.proprio, images=case.images, halting=halting, init_latent=case.init_latent)
            except NonFiniteActions:  # garbage fails the gate (0 iterations: no answer), it is neither a pass nor a crash
                entry.max_abs = entry.max_rel = entry.unnormalized_max_abs = math.inf
                entry.iterations.append(0)
                entry.reference_iterations.append(ref_k)
                continue
            err = error(out.normalized_actions, ref_actions)
            raw = error(out.actions / case.action_scale, case.trace_unnormalized_actions[ref_k - 1] / case.action_scale)
            entry.max_abs, entry.max_rel = worst([entry.max_abs, err["max_abs"]]), worst([entry.max_rel, err["max_rel"]])
            entry.unnormalized_max_abs = worst([entry.unnormalized_max_abs, raw["max_abs"]])
            entry.iterations.append(out.iterations)
            entry.reference_iterations.append(ref_k)
    return results


def gate_failures(results: dict[str, ModeResult], gate: Gate) -> list[str]:
    failures = []
    for mode, entry in results.items():
        if not entry.max_abs <= gate.actions_max_abs:
            failures.append(f"{mode}: actions max_abs {entry.max_abs:.3g} > {gate.actions_max_abs:g}")
        if not entry.unnormalized_max_abs <= gate.actions_max_abs:
            failures.append(f"{mode}: un-normalised actions off by {entry.unnormalized_max_abs:.3g} (normalised units) > "
                            f"{gate.actions_max_abs:g}: the bundle's normalisation statistics differ from the export's")
        if not entry.iteration_agreement >= gate.iteration_agreement:
            failures.append(f"{mode}: iteration agreement {entry.iteration_agreement:.2f} < {gate.iteration_agreement:g} "
                            f"(ours {entry.iterations}, reference {entry.reference_iterations})")
    return failures
