"""The calibrated FP16 graphs are well typed (strict ONNX shape inference accepts them) and keep the halting statistics in FP32.

TensorRT parses `graphs_fp16` as strongly typed networks (`rdvla build --precision fp16`), so a
tensor whose declared type disagrees with what its producer makes is a build failure on the robot.
"""

from __future__ import annotations

from typing import Any

import onnx
import pytest

from rdvla.runtime import contract


@pytest.mark.parametrize("graph", contract.GRAPHS)
def test_fp16_graphs_pass_strict_shape_inference(calibrated: dict[str, Any], graph: str) -> None:
    path = calibrated["bundle"] / calibrated["manifest"]["graphs_fp16"][graph]["file"]
    model = onnx.load(str(path))
    # strict_mode raises on any type or shape conflict between declarations and inference (value_info kept).
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


def test_fp16_halting_statistics_stay_fp32(calibrated: dict[str, Any]) -> None:
    """TensorRT builds graphs_fp16 as typed: the statistics chain (reshapes, Clip(min=1e-8)) must be FP32 in the graph itself."""
    from rdvla.runtime.backends.tensorrt.precision import halting_chain

    bundle, manifest = calibrated["bundle"], calibrated["manifest"]
    source = onnx.load(str(bundle / manifest["graphs"][contract.CORE_STEP_DECODE]["file"]), load_external_data=False)
    nodes = list(source.graph.node)
    chain = {nodes[p].name for p in halting_chain([(n.input, n.output) for n in nodes])}
    assert {"Reshape", "Clip", "Sub", "Div"} <= {n.op_type for n in nodes if n.name in chain}
    half = onnx.load(str(bundle / manifest["graphs_fp16"][contract.CORE_STEP_DECODE]["file"]))
    inferred = onnx.shape_inference.infer_shapes(half, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    for node in half.graph.node:
        if node.name in chain:
            assert all(types.get(o) != onnx.TensorProto.FLOAT16 for o in node.output), node.name
    assert chain <= set(manifest["graphs_fp16"][contract.CORE_STEP_DECODE]["fp32_nodes"])
