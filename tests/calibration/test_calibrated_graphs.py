"""`rdvla calibrate` writes INT8 Q/DQ and FP16 graphs TensorRT 10.3's ONNX parser takes."""

from __future__ import annotations

from typing import Any

import onnx

from rdvla.runtime.manifest import CALIBRATED_SECTIONS
from rdvla.runtime.graph_check.rules import check_graph


def test_calibrated_graphs_pass_the_check(calibrated: dict[str, Any]) -> None:
    assert calibrated["status"] == 0
    bundle, manifest = calibrated["bundle"], calibrated["manifest"]
    seen: dict[str, set[str]] = {}
    for precision in ("int8", "fp16"):
        entries = manifest[CALIBRATED_SECTIONS[precision]]
        assert len(entries) == 4
        for entry in entries.values():
            path = bundle / entry["file"]
            assert check_graph(path) == [], entry["file"]
            graph = onnx.load(str(path), load_external_data=False).graph
            seen.setdefault(precision, set()).update(n.op_type for n in graph.node)
            seen[precision].update(f"init{i.data_type}" for i in graph.initializer)
    assert {"QuantizeLinear", "DequantizeLinear"} <= seen["int8"]  # the checks ran on real Q/DQ and FP16 graphs
    assert "Cast" in seen["fp16"] and f"init{onnx.TensorProto.FLOAT16}" in seen["fp16"]
