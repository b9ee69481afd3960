"""Peak |x| of chosen tensors of an ONNX graph over many inputs, without holding the tensors.

Each tensor gets an Abs -> ReduceMax -> Cast probe whose scalar is an extra graph output, so a run
returns a few bytes per tensor: the VLM's activations for many queries never sit in memory at once.
Used for the FP16 range scan and the INT8 activation ranges (symmetric min/max needs only max |x|).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper


def save_beside(model: onnx.ModelProto, source: Path, target: Path) -> None:
    """Save a graph that shares `source`'s external weight files into another folder (links to them)."""
    for entry in {e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"}:
        link = target.parent / entry
        if not link.exists():
            os.symlink((source.parent / entry).resolve(), link)
    onnx.save(model, str(target))


def tensor_peaks(model: onnx.ModelProto, source: Path, samples: Iterable[dict[str, np.ndarray]],
                 tensors: Sequence[str]) -> dict[str, float]:
    """max |x| of each of `tensors` in `model` (whose external data sits beside `source`) over `samples`; inf/nan kept."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for tensor in tensors:
        absolute, reduced, peak = (f"{tensor}__peak{part}" for part in ("_abs", "_max", ""))
        probe.graph.node.extend([
            helper.make_node("Abs", [tensor], [absolute]),
            helper.make_node("ReduceMax", [absolute], [reduced], keepdims=0),
            helper.make_node("Cast", [reduced], [peak], to=TensorProto.FLOAT),
        ])
        probe.graph.output.append(helper.make_tensor_value_info(peak, TensorProto.FLOAT, []))
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rdvla-peaks-") as tmp:
        path = Path(tmp) / source.name
        save_beside(probe, source, path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs = [f"{t}__peak" for t in tensors]
        for feed in samples:
            for tensor, value in zip(tensors, session.run(outputs, feed)):
                v = float(np.asarray(value, np.float64))
                peaks[tensor] = v if np.isnan(v) else max(peaks.get(tensor, 0.0), v)
    return peaks
