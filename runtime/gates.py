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
    actions_max_abs: float  # normalised actions, any depth, any case
    context_max_rel: float  # each VLM+Prelude output (injection, keys, values)
    iteration_agreement: float  # adaptive halting: share of queries stopping at the reference's iteration


GATES: dict[str, Gate] = {
    # ONNX Runtime / TensorRT FP32 against the FP32 reference: float reordering only.
    "fp32": Gate(actions_max_abs=1e-4, context_max_rel=1e-4, iteration_agreement=1.0),
}


def gate_for(precision: str) -> Gate:
    if precision not in GATES:
        raise ValueError(f"no accuracy gate for precision {precision!r}; known: {', '.join(GATES)}")
    return GATES[precision]
