"""Peak |x| of chosen tensors of an ONNX graph over many inputs, without holding the tensors.

Each tensor gets an Abs -> ReduceMax -> Cast probe whose scalar is an extra graph output, so a run
returns a few bytes per tensor: the VLM's activations for many queries never sit in memory at once.
Used for the FP16 range scan and the INT8 activation ranges (symmetric min/max needs only max |x|).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper


def data_dependent(model: onnx.ModelProto) -> set[str]:
    """Node outputs that depend on a graph input. The others (weight transposes and the like) are
    constants ONNX Runtime folds at load; probing them would fold a full copy of each weight too."""
    constant = {i.name for i in model.graph.initializer} | {""}
    dependent = set()
    for node in model.graph.node:
        if all(i in constant for i in node.input):
            constant.update(node.output)
        else:
            dependent.update(o for o in node.output if o)
    return dependent


@contextmanager
def beside(model: onnx.ModelProto, source: Path, tag: str) -> Iterator[Path]:
    """`model` saved under a hidden name in `source`'s folder for the duration, so that the external
    weight files it shares with `source` resolve. ONNX Runtime refuses external data outside the
    graph's folder (no symbolic links) and onnx refuses files with several hard links."""
    fd, name = tempfile.mkstemp(prefix=f".rdvla-{tag}-", suffix=".onnx", dir=source.parent)
    os.close(fd)
    path = Path(name)
    try:
        onnx.save(model, str(path))
        yield path
    finally:
        path.unlink(missing_ok=True)


def tensor_peaks(model: onnx.ModelProto, source: Path, samples: Iterable[dict[str, np.ndarray]],
                 tensors: Sequence[str]) -> dict[str, float]:
    """max |x| of each of `tensors` in `model` (whose external data sits beside `source`) over `samples`; inf/nan kept."""
    import onnxruntime as ort

    def probes(tensor: str) -> list[onnx.NodeProto]:
        absolute, reduced, peak = (f"{tensor}__peak{part}" for part in ("_abs", "_max", ""))
        return [helper.make_node("Abs", [tensor], [absolute]),
                helper.make_node("ReduceMax", [absolute], [reduced], keepdims=0),
                helper.make_node("Cast", [reduced], [peak], to=TensorProto.FLOAT)]

    # Each probe right after the tensor's producer: ONNX Runtime then frees the tensor as it would
    # without probes, instead of keeping every activation of the graph alive for probes at the end.
    wanted = set(tensors)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.node[:]
    produced = {o for n in model.graph.node for o in n.output}
    for tensor in tensors:
        if tensor not in produced:  # a graph input
            probe.graph.node.extend(probes(tensor))
    for node in model.graph.node:
        probe.graph.node.append(node)
        for output in node.output:
            if output in wanted:
                probe.graph.node.extend(probes(output))
    probe.graph.output.extend(helper.make_tensor_value_info(f"{t}__peak", TensorProto.FLOAT, []) for t in tensors)
    peaks: dict[str, float] = {}
    with beside(probe, source, "probe") as path:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # The default order runs probes late, holding every activation meanwhile (15 GB for the full
        # VLM); the priority-based order runs each probe when its tensor appears (6 GB, as plain).
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs = [f"{t}__peak" for t in tensors]
        for feed in samples:
            for tensor, value in zip(tensors, session.run(outputs, feed)):
                v = float(np.asarray(value, np.float64))
                peaks[tensor] = v if np.isnan(v) else max(peaks.get(tensor, 0.0), v)
    return peaks
