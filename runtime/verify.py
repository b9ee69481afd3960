"""Golden-case verification of a bundle on any backend: actions per depth and halting agreement.

Used by `rdvla export` (ONNX Runtime, right after export) and by `rdvla verify` on the robot
(TensorRT engines), with the gates of `runtime.gates`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rdvla.runtime.gates import Gate
from rdvla.runtime.golden import GoldenCase
from rdvla.runtime.halting import AdjacentMSE, FixedDepth, HaltingRule
from rdvla.runtime.policy import Policy

FIXED_DEPTHS = (1, 4, 12, 32)
MSE_THRESHOLDS = (1e-3, 1e-4)


def verification_modes() -> list[tuple[str, HaltingRule]]:
    modes: list[tuple[str, HaltingRule]] = [(f"fixed_{k}", FixedDepth(k)) for k in FIXED_DEPTHS]
    return modes + [(f"mse_{t:g}", AdjacentMSE(t)) for t in MSE_THRESHOLDS]


def error(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """max |ours - ref| and that divided by max |ref| (see runtime.gates)."""
    diff = float(np.abs(ours.astype(np.float64) - ref).max())
    return {"max_abs": diff, "max_rel": diff / max(float(np.abs(ref).max()), 1e-30)}


@dataclass
class ModeResult:
    max_abs: float = 0.0
    max_rel: float = 0.0
    iterations: list[int] = field(default_factory=list)
    reference_iterations: list[int] = field(default_factory=list)

    @property
    def iteration_agreement(self) -> float:
        return float(np.mean([a == b for a, b in zip(self.iterations, self.reference_iterations)]))

    def to_json(self) -> dict[str, Any]:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "iterations": self.iterations,
                "reference_iterations": self.reference_iterations, "iteration_agreement": self.iteration_agreement}


def verify_actions(policy: Policy, cases: list[GoldenCase]) -> dict[str, ModeResult]:
    """Run every verification mode on every case through `policy`; worst errors per mode."""
    results: dict[str, ModeResult] = {}
    for case in cases:
        for mode, halting in verification_modes():
            out = policy.act(case.instruction, case.proprio, images=case.images, halting=halting, init_latent=case.init_latent)
            ref_actions, ref_k = case.reference(halting)
            err = error(out.normalized_actions, ref_actions)
            entry = results.setdefault(mode, ModeResult())
            entry.max_abs, entry.max_rel = max(entry.max_abs, err["max_abs"]), max(entry.max_rel, err["max_rel"])
            entry.iterations.append(out.iterations)
            entry.reference_iterations.append(ref_k)
    return results


def gate_failures(results: dict[str, ModeResult], gate: Gate) -> list[str]:
    failures = []
    for mode, entry in results.items():
        if not entry.max_abs <= gate.actions_max_abs:
            failures.append(f"{mode}: actions max_abs {entry.max_abs:.3g} > {gate.actions_max_abs:g}")
        if entry.iteration_agreement < gate.iteration_agreement:
            failures.append(f"{mode}: iteration agreement {entry.iteration_agreement:.2f} < {gate.iteration_agreement:g} "
                            f"(ours {entry.iterations}, reference {entry.reference_iterations})")
    return failures
