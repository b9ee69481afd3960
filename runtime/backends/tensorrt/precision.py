"""Precision choices of a build, as plain functions: which precisions exist, how each graph is built, what stays FP32.

A bundle's `graphs` are FP32, so TensorRT owns the precision choice for them: an fp16 (or int8)
build parses them into a weakly typed network, enables FP16 (and INT8 for explicit Q/DQ graphs),
and pins to FP32, with OBEY_PRECISION_CONSTRAINTS, the layers that overflow or lose range in FP16
(`fp32_layers`). A graph whose entry says `"strongly_typed": true` (the `graphs_fp16` that
`rdvla calibrate` converted and validated, or Q/DQ graphs typed by their producer) is parsed as a
strongly typed network instead and built exactly as typed. FP8 and FP4 are refused: Orin (SM 8.7)
has no such tensor cores and bundles carry no FP8/FP4 graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Optional, Sequence

from rdvla.runtime import contract

PRECISIONS = ("fp16", "int8", "fp32")
REFUSED = ("fp8", "fp4")
ALIASES = {"nvfp4": "fp4", "half": "fp16", "float16": "fp16", "float32": "fp32"}
# The oldest GPU generation with each kind of arithmetic: Maxwell-Tegra FP16, Pascal DP4A, Ada FP8, Blackwell FP4.
_MIN_CAPABILITY = {"fp32": (0, 0), "fp16": (5, 3), "int8": (6, 1), "fp8": (8, 9), "fp4": (10, 0)}


class BuildError(ValueError):
    """A build request this tool refuses or a build TensorRT could not finish (reported in one line)."""


def canonical_precision(precision: str) -> str:
    return ALIASES.get(precision.lower(), precision.lower())


def check_precision(precision: str, capability: Optional[tuple[int, int]] = None) -> str:
    """The canonical precision name, or BuildError for an unknown one, FP8/FP4, or one the GPU lacks."""
    wanted = canonical_precision(precision)
    if wanted not in PRECISIONS and wanted not in REFUSED:
        raise BuildError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")
    need = _MIN_CAPABILITY[wanted]
    if capability is not None and tuple(capability) < need:
        usable = [p for p in PRECISIONS if _MIN_CAPABILITY[p] <= tuple(capability)]
        orin = " (Jetson Orin has no FP8/FP4 tensor cores)" if wanted in REFUSED else ""
        raise BuildError(
            f"{wanted} needs compute capability {need[0]}.{need[1]} or newer and this GPU is "
            f"{capability[0]}.{capability[1]}{orin}: build {' or '.join(usable)}"
        )
    if wanted in REFUSED:
        raise BuildError(
            f"{wanted} engines are not supported: they need compute capability {need[0]}.{need[1]} or newer "
            f"(Jetson Orin is 8.7, without FP8/FP4 tensor cores) and {wanted.upper()} Q/DQ graphs, which bundles "
            "do not carry; build fp16 or int8"
        )
    return wanted


@dataclass(frozen=True)
class GraphSource:
    """The ONNX file one engine is built from."""

    name: str
    file: str  # relative to the bundle root
    quantized: bool  # an explicit Q/DQ graph from manifest["graphs_int8"]
    strongly_typed: bool  # the graph fixes its own tensor types (manifest "strongly_typed")


@dataclass(frozen=True)
class PrecisionPlan:
    """How one graph is built: network typing, builder flags set and cleared, and whether to pin FP32 layers."""

    strongly_typed: bool
    set_flags: tuple[str, ...]  # BuilderFlag names
    clear_flags: tuple[str, ...]
    pin_fp32: bool  # apply `fp32_layers` as layer precision constraints

    @property
    def recorded_flags(self) -> tuple[str, ...]:
        """The flags as the manifest records them."""
        return self.set_flags + tuple(f"no {f}" for f in self.clear_flags) + (("STRONGLY_TYPED",) if self.strongly_typed else ())


def precision_plan(precision: str, source: GraphSource) -> PrecisionPlan:
    """How `source` is built at `precision` (see the module docstring)."""
    if source.strongly_typed:
        return PrecisionPlan(True, (), (), False)
    if precision == "fp32":
        # TF32 would round matmul inputs to 10 mantissa bits: fp32 engines are the accuracy reference.
        return PrecisionPlan(False, (), ("TF32",), False)
    low = ("FP16", "INT8") if precision == "int8" and source.quantized else ("FP16",)
    return PrecisionPlan(False, (*low, "OBEY_PRECISION_CONSTRAINTS"), (), True)


@dataclass(frozen=True)
class LayerInfo:
    """What the FP32 selection needs to know about one network layer."""

    index: int
    kind: str  # LayerType name
    op: Optional[str]  # ElementWiseOperation / UnaryOperation name for those layers
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    float_outputs: bool  # constraining a layer with integer (shape) outputs to FP32 would fail the build


_FP32_KINDS = {"NORMALIZATION": "normalisation", "SOFTMAX": "softmax", "REDUCE": "reduction"}
_FP32_OPS = {("ELEMENTWISE", "POW"): "power (decomposed norm)", ("UNARY", "SQRT"): "square root (decomposed norm)"}
_CHAIN_KINDS = ("ELEMENTWISE", "UNARY", "REDUCE")
# The halting statistics read the previous and the new actions and write mse and cosine (export/head.py,
# adjacent_statistic_tensors): flatten (SHUFFLE), subtract, square, mean; products, norms, Clip(min=1e-8)
# (ACTIVATION kCLIP when the bound is an initializer: onnx/onnx-tensorrt onnxOpImporters.cpp, Clip, 10.1-GA),
# divide, reshape (SHUFFLE). 1e-8 is below FP16's smallest subnormal (6e-8): in FP16 the clip floor is 0 and
# the cosine of two zero action chunks is 0/0.
HALTING_SOURCES = (contract.PREV_ACTIONS, contract.ACTIONS)
HALTING_OUTPUTS = (contract.MSE, contract.COSINE)


def halting_chain(nodes: Sequence[tuple[Collection[str], Collection[str]]]) -> set[int]:
    """Positions of the nodes, given as (inputs, outputs) in topological order, on a path from the
    actions (previous or new) to the halting statistics, whatever their kind.

    One rule for TensorRT layers (`fp32_layers`) and ONNX nodes (calibration.fp16, whose FP16 graphs
    TensorRT builds as typed).
    """
    reached = set(HALTING_SOURCES)
    forward = set()
    for position, (inputs, outputs) in enumerate(nodes):
        if reached.intersection(inputs):
            forward.add(position)
            reached.update(outputs)
    needed = set(HALTING_OUTPUTS)
    chain = set()
    for position in reversed(range(len(nodes))):
        inputs, outputs = nodes[position]
        if needed.intersection(outputs):
            needed.update(inputs)
            if position in forward:
                chain.add(position)
    return chain


def fp32_layers(layers: Sequence[LayerInfo], network_inputs: Collection[str], network_outputs: Collection[str]) -> dict[int, str]:
    """Layer index -> why it must run in FP32 in an FP16 build.

    Layers arrive in topological order. Every float layer of the halting chain (`halting_chain`,
    shuffles and activations included) stays FP32. Besides normalisations, softmax and reductions,
    FP32 spreads through element-wise layers from FP32 values: the network inputs (the recurrent
    latent, the previous actions, pixel values), reductions, powers and square roots (the rest of a
    decomposed RMSNorm) and the layers that write network outputs. It stops at the first layer of
    another kind (typically a MatMul, which runs in FP16), so the residual stream stays FP32 and the
    heavy layers do not.
    """
    pinned: dict[int, str] = {}
    chain = set(network_inputs)
    outputs = set(network_outputs)
    halting = {layers[p].index for p in halting_chain([(layer.inputs, layer.outputs) for layer in layers])}
    for layer in layers:
        if not layer.float_outputs:
            continue
        reason = _FP32_KINDS.get(layer.kind) or _FP32_OPS.get((layer.kind, layer.op or ""))
        if reason is None and layer.index in halting:
            reason = "halting statistic"
        if reason is None and layer.kind in ("ELEMENTWISE", "UNARY") and chain.intersection(layer.inputs):
            reason = "element-wise on an FP32 value"
        writes_output = bool(outputs.intersection(layer.outputs))
        if reason is None and writes_output:
            reason = "writes an FP32 network output"
        if reason is None:
            continue
        pinned[layer.index] = reason
        if layer.kind in _CHAIN_KINDS or writes_output:
            chain.update(layer.outputs)
    return pinned
