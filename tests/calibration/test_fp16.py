"""The FP16 scan and conversion on a small graph with a layer that overflows FP16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rdvla.calibration.fp16 import FP16_LIMIT, emulation, float_tensors, make_fp16, fixed_fp32_nodes
from rdvla.calibration.probe import tensor_peaks

D = 16


def norm_block(path: Path) -> Path:
    """x -> RMS norm (decomposed) -> MatMul with huge weights (overflows FP16) -> MatMul back down -> + x."""
    rng = np.random.default_rng(0)
    big = (rng.standard_normal((D, D)) * 10000).astype(np.float32)
    small = (rng.standard_normal((D, D)) / 10000 / D).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((big, "w_big"), (small, "w_small"),
                                                          (np.array(2.0, np.float32), "two"), (np.array(1e-6, np.float32), "eps"))]
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["sq"], name="pow"),
        helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], name="mean", keepdims=1),
        helper.make_node("Add", ["ms", "eps"], ["mse"], name="add_eps"),
        helper.make_node("Sqrt", ["mse"], ["rms"], name="sqrt"),
        helper.make_node("Reciprocal", ["rms"], ["inv"], name="inv"),
        helper.make_node("Mul", ["x", "inv"], ["normed"], name="scale"),
        helper.make_node("MatMul", ["normed", "w_big"], ["up"], name="up"),
        helper.make_node("MatMul", ["up", "w_small"], ["down"], name="down"),
        helper.make_node("Add", ["x", "down"], ["y"], name="residual"),
    ]
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axes"))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def samples(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 8, D)).astype(np.float32)} for _ in range(count)]


def test_policy_keeps_norms_and_the_residual_in_fp32(tmp_path: Path) -> None:
    kept = fixed_fp32_nodes(onnx.load(str(norm_block(tmp_path / "block.onnx"))))
    assert set(kept) == {"pow", "mean", "add_eps", "sqrt", "inv", "scale", "residual"}
    assert kept["residual"] == "element-wise on an FP32 value"


def test_peaks_find_the_overflowing_layer(tmp_path: Path) -> None:
    path = norm_block(tmp_path / "block.onnx")
    model = onnx.load(str(path))
    peaks = tensor_peaks(model, path, samples(), sorted(float_tensors(model)))
    assert peaks["up"] > 65504 > FP16_LIMIT > peaks["normed"]
    largest = max(float(np.abs(s["x"]).max()) for s in samples())
    assert abs(peaks["sq"] - largest**2) <= 1e-5 * largest**2


def test_emulation_stores_fp16_values_and_overflows_like_fp16(tmp_path: Path) -> None:
    path = norm_block(tmp_path / "block.onnx")
    model = onnx.load(str(path))
    emulated = emulation(model, fixed_fp32_nodes(model))
    peaks = tensor_peaks(emulated, path, samples(), ["up", "normed", "down"])
    assert peaks["up"] == np.inf  # rounded through FP16 where the FP16 graph stores it
    onnx.save(emulated, str(tmp_path / "emulated.onnx"))
    session = ort.InferenceSession(str(tmp_path / "emulated.onnx"), providers=["CPUExecutionProvider"])
    assert not np.isfinite(session.run(None, samples()[0])[0]).all()


def test_fp16_graph_keeps_the_overflow_in_fp32_and_stays_finite(tmp_path: Path) -> None:
    source = norm_block(tmp_path / "block.onnx")
    result = make_fp16(source, tmp_path / "block_fp16.onnx", samples())
    onnx.save(result.emulation, str(tmp_path / "emulated.onnx"))
    assert "up" in result.overflow and result.fp32_nodes["up"].startswith("FP32 peak")
    assert "up" in result.naive_nonfinite  # everything in FP16 overflows there
    # `down` reads up's output, which FP16 cannot hold either: the check finds it and keeps it FP32 too.
    assert result.fp32_nodes["down"] == "not finite in FP16" and result.rounds == 2
    converted = onnx.load(str(result.path))
    onnx.checker.check_model(converted)  # sorted, typed
    weights = {i.name: i.data_type for i in converted.graph.initializer}
    assert weights["w_big"] == TensorProto.FLOAT
    fp32, fp16, emulated = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                            for p in (source, result.path, tmp_path / "emulated.onnx"))
    for feed in samples(8):
        ref = fp32.run(None, feed)[0]
        for session in (fp16, emulated):
            ours = session.run(None, feed)[0]
            assert ours.dtype == np.float32 and np.isfinite(ours).all()
            assert np.abs(ours - ref).max() <= 1e-2 * np.abs(ref).max()
