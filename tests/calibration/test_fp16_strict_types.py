"""The calibrated FP16 graphs are well typed: strict ONNX shape inference accepts every one of them.

TensorRT parses `graphs_fp16` as strongly typed networks (`rdvla build --precision fp16`), so a
tensor whose declared type disagrees with what its producer makes is a build failure on the robot.
"""

from __future__ import annotations

from typing import Any

import onnx
import pytest

from rdvla.runtime.backends import base as names


@pytest.mark.parametrize("graph", names.GRAPHS)
def test_fp16_graphs_pass_strict_shape_inference(calibrated: dict[str, Any], graph: str) -> None:
    path = calibrated["bundle"] / calibrated["manifest"]["graphs_fp16"][graph]["file"]
    model = onnx.load(str(path))
    # strict_mode raises on any type or shape conflict between declarations and inference (value_info kept).
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
