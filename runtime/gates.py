"""Accuracy gates: the one file of thresholds every comparison is judged by, per precision.

Errors are measured against the FP32 PyTorch reference on the bundle's golden cases:
`max_abs` = max |ours - ref|; `max_rel` = max |ours - ref| / max |ref| over the tensor (an
element-wise relative error is meaningless near zero). `iteration_agreement` is the share of
adaptive-halting queries that stop at the same iteration as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gate:
    actions_max_abs: float  # normalised actions, any iteration count, any case
    context_max_rel: float  # each VLM+Prelude output (injection, keys, values)
    iteration_agreement: float  # adaptive halting: share of queries stopping at the reference's iteration


GATES: dict[str, Gate] = {
    # ONNX Runtime / TensorRT FP32 against the FP32 reference: float reordering only.
    "fp32": Gate(actions_max_abs=1e-4, context_max_rel=1e-4, iteration_agreement=1.0),
    # fp16/int8 on ONNX Runtime CPU, full-size golden cases (BENCHMARKS.md s.5): FP16 worst actions
    # 1.5e-3 (6x inside), INT8 with all four graphs quantised 6.1e-2 (1.6x inside). The gates are
    # 0.5 % and 5 % of the normalised [-1, 1] range, chosen for the robot rather than fitted to the
    # measurement. To be read again with TensorRT engines measured on an Orin.
    "fp16": Gate(actions_max_abs=1e-2, context_max_rel=1e-2, iteration_agreement=0.5),
    "int8": Gate(actions_max_abs=0.1, context_max_rel=0.15, iteration_agreement=0.0),
}


def gate_for(precision: str) -> Gate:
    if precision not in GATES:
        raise ValueError(f"no accuracy gate for precision {precision!r}; known: {', '.join(GATES)}")
    return GATES[precision]


@dataclass(frozen=True)
class CalibrationGate:
    """Gates of the calibration report (`rdvla calibrate`), measured on the calibration queries."""

    core_rel_l2: float  # core_step / core_step_decode / decode outputs against FP32, same inputs
    vlm_rel_l2: float  # vlm_prelude outputs against FP32
    actions_max_abs: float  # whole queries, worst over iteration indices 1..32
    mean_abs_drift: float  # mean |stop iteration - FP32's| under the bundle's default halting

    def graph_rel_l2(self, graph: str) -> float:
        return self.vlm_rel_l2 if graph == "vlm_prelude" else self.core_rel_l2


# Full size (BENCHMARKS.md s.5), measured / gate: FP16 core 6.2e-4 / 5e-3, VLM 2.0e-3 / 2e-2,
# actions 2.0e-3 / 1e-2, drift 0 / 0.5; INT8 core 2.1e-2 / 5e-2, VLM 5.9e-2 / 0.10, actions
# 0.141 / 0.15, drift 0 / 1.0. INT8's action gate is the one with little room: on a trained
# checkpoint a failure there means "quantise the core graphs only" (`--graphs`), whose worst
# action error measured 0.037.
CALIBRATION_GATES: dict[str, CalibrationGate] = {
    "fp16": CalibrationGate(core_rel_l2=5e-3, vlm_rel_l2=2e-2, actions_max_abs=1e-2, mean_abs_drift=0.5),
    "int8": CalibrationGate(core_rel_l2=0.05, vlm_rel_l2=0.10, actions_max_abs=0.15, mean_abs_drift=1.0),
}


def calibration_gate_for(precision: str) -> CalibrationGate:
    if precision not in CALIBRATION_GATES:
        raise ValueError(f"no calibration gate for precision {precision!r}; known: {', '.join(CALIBRATION_GATES)}")
    return CALIBRATION_GATES[precision]
