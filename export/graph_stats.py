"""Work and traffic of a graph computed from its shapes: MatMul/Gemm FLOPs, weight bytes, I/O bytes.

Used for the per-iteration roofline: on a Jetson the core step is bound by streaming its weights
from DRAM, so bytes per iteration / memory bandwidth is the floor no engine can beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import onnx

ORIN_AGX_BANDWIDTH = 204.8e9  # bytes/s, AGX Orin 64 GB LPDDR5 peak


@dataclass(frozen=True)
class GraphStats:
    matmul_flops: int  # 2 * M * N * K summed over MatMul/Gemm nodes
    weight_params: int  # elements of the float matrices a run reads whole (`streamed_matrices`)
    weight_bytes: int  # as stored (FP32 graphs: 4 bytes per element)
    io_bytes: int  # graph inputs + outputs at their static shapes

    def floor_seconds(self, bytes_per_weight: float, bandwidth: float = ORIN_AGX_BANDWIDTH) -> float:
        """Lower bound: weights at `bytes_per_weight` plus the I/O tensors, streamed once at `bandwidth`."""
        return (self.weight_params * bytes_per_weight + self.io_bytes) / bandwidth


def streamed_matrices(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Initializers of two or more dimensions that a run reads whole. Tables read only through
    Gather (the tied token embedding, 136 M parameters in Qwen2.5-0.5B) are left out: a run reads
    the prompt's rows of them, a few kilobytes."""
    gathered: set[str] = set()
    other: set[str] = set()
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            (gathered if node.op_type == "Gather" and i == 0 else other).add(name)
    tables = gathered - other
    return [i for i in model.graph.initializer if len(i.dims) >= 2 and i.name not in tables]


def _dims(value: onnx.ValueInfoProto, sizes: dict[str, int]) -> list[int]:
    return [d.dim_value if d.dim_value else sizes.get(d.dim_param, 1) for d in value.type.tensor_type.shape.dim]


def graph_stats(path: Path, dynamic: dict[str, int] | None = None) -> GraphStats:
    """Stats of the ONNX graph at `path`, dynamic dimensions set by `dynamic` (e.g. prompt_len)."""
    sizes = dynamic or {}
    # Weights are not needed for shapes; graphs over 2 GB only serialise without their external data.
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: _dims(v, sizes) for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    initializers = {i.name: list(i.dims) for i in model.graph.initializer}
    shapes.update(initializers)
    flops = 0
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        a, b = (shapes.get(n) for n in node.input[:2])
        if not a or not b:
            raise ValueError(f"{path.name}: no shape for an operand of {node.name}")
        if node.op_type == "Gemm" and any(at.name == "transB" and at.i for at in node.attribute):
            b = b[::-1]
        batch = math.prod(a[:-2]) if len(a) > 2 else 1
        flops += 2 * batch * a[-2] * a[-1] * b[-1]
    float_types = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT8: 1}
    matrices = [i for i in streamed_matrices(model) if i.data_type in float_types]
    params = sum(math.prod(i.dims) for i in matrices)
    weight_bytes = sum(math.prod(i.dims) * float_types[i.data_type] for i in matrices)
    io = sum(math.prod(shapes[v.name]) * 4 for v in [*model.graph.input, *model.graph.output])
    return GraphStats(flops, params, weight_bytes, io)
