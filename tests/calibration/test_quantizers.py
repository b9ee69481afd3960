"""The two quantisers agree and ModelOpt is optional."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rdvla.calibration.data import CalibrationSet
from rdvla.calibration.quantize import (QuantizationError, constant_transposes, fold_weight_transposes, quantize_graph,
                                  weight_matmuls)
from rdvla.runtime import contract
from rdvla.runtime.bundle import Bundle


def _dataset(calibrated: dict[str, Any]) -> tuple[Bundle, CalibrationSet]:
    bundle = Bundle.open(calibrated["bundle"])
    return bundle, CalibrationSet.load(bundle.path(bundle.manifest.calibration["int8"]["data"]["dir"]))


def test_modelopt_max_and_ort_minmax_make_the_same_graph(calibrated: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("modelopt.onnx.quantization", reason="ModelOpt is the optional `calibration` extra")
    bundle, data = _dataset(calibrated)
    source = bundle.path(bundle.graph(contract.CORE_STEP).file)
    graphs = {q: quantize_graph(source, tmp_path / f"{q}.onnx", data.samples(contract.CORE_STEP), q) for q in ("ort", "modelopt")}
    assert graphs["ort"].quantized_nodes == graphs["modelopt"].quantized_nodes == len(weight_matmuls(onnx.load(str(source))))
    sessions = {q: ort.InferenceSession(str(g.path), providers=["CPUExecutionProvider"]) for q, g in graphs.items()}
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    for feed in list(data.samples(contract.CORE_STEP))[:8]:
        ref = reference.run(None, feed)[0]
        a, b = (sessions[q].run(None, feed)[0] for q in ("ort", "modelopt"))
        assert np.abs(a - ref).max() > 1e-4  # really quantised
        np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(ref).max())  # same scales, same placement
    # ModelOpt rebinds parts of ONNX Runtime's quantiser while it runs; ours works the same afterwards.
    again = quantize_graph(source, tmp_path / "ort_again.onnx", data.samples(contract.CORE_STEP), "ort")
    assert onnx.load(str(again.path)).graph == onnx.load(str(graphs["ort"].path)).graph


def test_ort_quantiser_keeps_its_preprocessing_advice_out_of_our_logs(calibrated: dict[str, Any], tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    bundle, data = _dataset(calibrated)
    source = bundle.path(bundle.graph(contract.DECODE).file)
    with caplog.at_level("INFO"):
        quantize_graph(source, tmp_path / "decode.onnx", data.samples(contract.DECODE), "ort")
    assert any("weight MatMuls quantised" in r.getMessage() for r in caplog.records)
    assert not any("pre-processing" in r.getMessage() for r in caplog.records)
    logging.warning("Please consider the filter gone")  # only for the duration of the call
    assert caplog.records[-1].getMessage() == "Please consider the filter gone"


def test_weights_behind_a_transpose_are_folded_and_quantised_like_the_others(calibrated: dict[str, Any], tmp_path: Path) -> None:
    bundle, data = _dataset(calibrated)
    source = bundle.path(bundle.graph(contract.VLM_PRELUDE).file)
    original = onnx.load(str(source))
    transposes = constant_transposes(original)
    assert transposes  # the exporter leaves them in front of the vision towers' shared linear weights
    behind = sum(n.op_type in ("MatMul", "Gemm") and n.input[1] in {t.output[0] for t in transposes} for n in original.graph.node)
    assert fold_weight_transposes(source, tmp_path / "folded.onnx") == len(transposes)
    folded = onnx.load(str(tmp_path / "folded.onnx"))
    assert not constant_transposes(folded)
    assert len(weight_matmuls(folded)) == len(weight_matmuls(original)) + behind
    feed = next(iter(data.samples(contract.VLM_PRELUDE)))
    before, after = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)
                     for p in (source, tmp_path / "folded.onnx"))
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # a layout change only

    result = quantize_graph(source, tmp_path / "int8" / "vlm_prelude.onnx", data.samples(contract.VLM_PRELUDE), "ort")
    assert result.quantized_nodes == len(weight_matmuls(folded))
    assert not constant_transposes(onnx.load(str(result.path)))
    assert [p.name for p in (tmp_path / "int8").iterdir()] == ["vlm_prelude.onnx"]  # the folded copy is gone


def test_unknown_quantizer_or_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="choose ort, modelopt"):
        quantize_graph(tmp_path / "x.onnx", tmp_path / "y.onnx", [], "tensorrt")
    with pytest.raises(QuantizationError, match="minmax, percentile, entropy"):
        quantize_graph(tmp_path / "x.onnx", tmp_path / "y.onnx", [], "ort", "max")
