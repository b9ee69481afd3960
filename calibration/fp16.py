"""FP16 on CPU: find where a graph leaves FP16's range, and write FP16 graphs that keep those parts in FP32.

ONNX Runtime's x86 CPU provider has FP16 kernels for few operators: it runs an FP16 graph in FP32
between casts it inserts and removes, so most FP16 tensors are never formed and an overflow does
not show. Measurements therefore use an *emulation* graph: the FP32 graph with every float input
and output of each node that the FP16 graph runs in FP16 rounded through FP16 (a Cast pair, which
ONNX Runtime keeps at every optimisation level). It stores exactly what the FP16 graph stores,
with FP32 arithmetic inside each node as TensorRT's FP16 kernels accumulate; overflow becomes inf.

1. Peak scan: the FP32 graph runs on the calibration samples with every float tensor's max |x|
   as an extra output (one Abs/ReduceMax probe per tensor, so nothing large is held). A tensor
   whose peak is above `FP16_LIMIT` (65504 over `HEADROOM`) marks its producer.
2. Policy: what TensorRT's FP16 build pins to FP32 too (`runtime.backends.tensorrt.precision.fp32_layers`), on
   ONNX nodes: normalisations, softmax, reductions, the power / square root / reciprocal of
   decomposed norms, every node of the halting statistics' chain from the actions to mse and
   cosine (reshapes and the Clip(min=1e-8) included: `precision.halting_chain`), element-wise
   nodes fed by FP32 values (the residual stream from the recurrent latent) and nodes writing a
   graph output. TensorRT builds these graphs as typed, so this is where the statistics stay FP32.
3. Check: the emulation with the policy and the scan's nodes in FP32 runs on the samples with the
   probes; any node whose FP16 output is not finite joins the FP32 set, and again, until finite.
4. Conversion: ONNX Runtime's float16 converter with those nodes blocked and FP32 graph I/O; the
   casts it puts between two FP32 nodes are removed, the value_info entries it retyped to FP16 for
   initializers it kept in FP32 are dropped (strict ONNX type inference, and TensorRT's strongly
   typed parse of `graphs_fp16`, reject the contradiction), and the nodes sorted (it appends its casts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper

from rdvla.calibration.probe import data_dependent, tensor_peaks
from rdvla.calibration.quantize import save_graph
from rdvla.runtime.backends.tensorrt.precision import halting_chain

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
HEADROOM = 8.0  # calibration data is a sample of what the robot will see; keep 3 bits of range in reserve
FP16_LIMIT = FP16_MAX / HEADROOM
MAX_ROUNDS = 4
# Attention masks fill with float32's lowest value; the converter clamps such constants to FP16's.
MASK_SENTINEL = 1e38
FP32_OPS = {
    "LayerNormalization": "normalisation", "Softmax": "softmax", "ReduceMean": "reduction", "ReduceSum": "reduction",
    "ReduceL2": "reduction", "ReduceMax": "reduction", "Pow": "power (decomposed norm)",
    "Sqrt": "square root (decomposed norm)", "Reciprocal": "reciprocal (decomposed norm)",
}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Clip", "Max", "Min", "Where", "Sigmoid", "Tanh", "Exp", "Erf"}
_CHAIN_OPS = ELEMENTWISE | set(FP32_OPS)


@dataclass
class Fp16Result:
    path: Path
    emulation: onnx.ModelProto  # the FP32 graph rounding what `path` stores in FP16 (what the report measures); weights external as in the source
    fp32_nodes: dict[str, str]  # node -> why it stays FP32
    overflow: dict[str, float]  # FP32 peak scan: node -> peak |x| above the limit
    masks: list[str]  # nodes carrying an attention mask's float32-lowest fill: FP16 saturates it, harmlessly
    naive_nonfinite: list[str] = field(default_factory=list)  # nodes that overflow when every node runs in FP16
    rounds: int = 1


def _types(model: onnx.ModelProto) -> dict[str, int]:
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]  # stale entries (e.g. from the float16 converter) fail inference
    inferred = onnx.shape_inference.infer_shapes(bare).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def float_tensors(model: onnx.ModelProto) -> dict[str, str]:
    """Float tensor -> producing node, for every node output."""
    types = _types(model)
    return {o: n.name for n in model.graph.node for o in n.output if o and types.get(o) in (TensorProto.FLOAT, TensorProto.FLOAT16)}


def emulation(model: onnx.ModelProto, fp32_nodes: Iterable[str]) -> onnx.ModelProto:
    """The FP32 graph with every float input and output of the nodes outside `fp32_nodes` rounded through FP16."""
    keep = set(fp32_nodes)
    types = _types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    rounded: dict[str, str] = {}  # tensor -> its FP16-rounded name
    stored_fp16: set[str] = set()  # outputs of FP16 nodes: already rounded where produced

    def cast_pair(source: str, target: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Cast", [source], [f"{target}__fp16"], to=TensorProto.FLOAT16),
                helper.make_node("Cast", [f"{target}__fp16"], [target], to=TensorProto.FLOAT)]

    for node in model.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if node.name in keep:
            out.graph.node.append(copy)
            continue
        for i, name in enumerate(copy.input):
            if name and types.get(name) == TensorProto.FLOAT and name not in stored_fp16:
                if name not in rounded:
                    rounded[name] = f"{name}__r16"
                    out.graph.node.extend(cast_pair(name, rounded[name]))
                copy.input[i] = rounded[name]
        pairs = []
        for i, name in enumerate(copy.output):
            if name and types.get(name) == TensorProto.FLOAT:
                copy.output[i] = f"{name}__raw"
                pairs += cast_pair(copy.output[i], name)
                stored_fp16.add(name)
        out.graph.node.append(copy)
        out.graph.node.extend(pairs)
    return out


def fixed_fp32_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes kept in FP32 whatever the data says (see the module docstring), with the reason."""
    graph = model.graph
    chain = {i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    outputs = {o.name for o in graph.output}
    kept: dict[str, str] = {}
    halting = halting_chain([(node.input, node.output) for node in graph.node])
    for position, node in enumerate(graph.node):
        reason = FP32_OPS.get(node.op_type)
        if reason is None and position in halting:
            reason = "halting statistic"
        if reason is None and node.op_type in ELEMENTWISE and chain.intersection(node.input):
            reason = "element-wise on an FP32 value"
        if reason is None and outputs.intersection(node.output):
            reason = "writes an FP32 graph output"
        if reason is None:
            continue
        kept[node.name] = reason
        if node.op_type in _CHAIN_OPS or outputs.intersection(node.output):
            chain.update(node.output)
    return kept


def _fold_cast_pairs(model: onnx.ModelProto) -> int:
    """Join neighbouring FP32 nodes directly: the float16 converter casts every output of a blocked
    node to FP16 and back before the next blocked node, which would squeeze an FP32 region (x^2 in
    a norm) through FP16 at every edge. Returns the number of round trips removed."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({i.name: i.data_type for i in graph.initializer})
    producers = {o: n for n in graph.node for o in n.output}

    def cast_to(node: onnx.NodeProto) -> Optional[int]:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    rename = {}
    graph_outputs = {o.name for o in graph.output}
    for node in graph.node:
        first = producers.get(node.input[0]) if cast_to(node) == TensorProto.FLOAT else None
        if first is not None and cast_to(first) == TensorProto.FLOAT16 and types.get(first.input[0]) == TensorProto.FLOAT:
            if node.output[0] in graph_outputs:  # the output keeps its name: pass the FP32 value straight through
                node.op_type = "Identity"
                del node.attribute[:]
                node.input[0] = first.input[0]
            else:
                rename[node.output[0]] = first.input[0]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    while True:  # a removed cast may leave the cast that fed it unused
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Cast" and not used.intersection(n.output)]
        if not dead:
            return len(rename)
        for node in dead:
            graph.node.remove(node)


def _drop_initializer_value_info(graph: onnx.GraphProto) -> None:
    """Remove the value_info entries that name an initializer.

    The converter retypes every float value_info entry to FLOAT16, also those of the weights it
    keeps in FLOAT for blocked nodes (the norms' scales and biases). An initializer carries its own
    type, so the entry adds nothing but the contradiction."""
    initializers = {i.name for i in graph.initializer}
    kept = [v for v in graph.value_info if v.name not in initializers]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """ONNX (and TensorRT's parser) needs producers before consumers; the float16 converter appends its casts."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError(f"{graph.name}: a cycle or an undefined input near node {pending[0].name}")
        for node in ready:
            available.update(node.output)
        ordered += ready
        taken = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in taken]
    copies = []
    for node in ordered:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)


def convert(source: Path, target: Path, fp32_nodes: Iterable[str]) -> None:
    """Write `source` in FP16 with `fp32_nodes` (and the FP32 graph inputs and outputs) left in FP32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # Given a path, the converter infers shapes file to file; on a loaded model it serialises the
    # whole proto, which protobuf refuses above 2 GB (the full-size VLM graph).
    converted = convert_float_to_float16(
        str(source), keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST), node_block_list=sorted(set(fp32_nodes)),
    )
    _fold_cast_pairs(converted)
    _drop_initializer_value_info(converted.graph)
    _sort_topologically(converted.graph)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_graph(converted, target)


def make_fp16(source: Path, target: Path, samples: Iterable[dict[str, np.ndarray]], naive_check: bool = True,
              limit: float = FP16_LIMIT) -> Fp16Result:
    """Scan, decide the FP32 nodes (policy, scan, emulated overflow), write the FP16 graph; returns it with its emulation."""
    feeds = list(samples)
    model = onnx.load(str(source), load_external_data=False)
    producers = float_tensors(model)
    tensors = sorted(set(producers) & data_dependent(model))
    overflow: dict[str, float] = {}
    masks: set[str] = set()  # mask tensors: FP16 turns their fill into -inf (or -65504), which softmax reads the same
    for tensor, peak in tensor_peaks(model, source, feeds, tensors).items():
        node = producers[tensor]
        if MASK_SENTINEL <= peak < np.inf:
            masks.add(tensor)
        elif peak > limit or not np.isfinite(peak):
            overflow[node] = max(overflow.get(node, 0.0), peak)

    def nonfinite(kept: Iterable[str]) -> list[str]:
        peaks = tensor_peaks(emulation(model, kept), source, feeds, tensors)
        return sorted({producers[t] for t, v in peaks.items() if not np.isfinite(v) and t not in masks})

    naive = nonfinite([]) if naive_check else []
    if naive:
        log.info("%s: %d nodes overflow when every node runs in FP16, first %s", source.name, len(naive), naive[0])
    kept = fixed_fp32_nodes(model)
    for node, peak in overflow.items():
        kept.setdefault(node, f"FP32 peak {peak:.4g} above {limit:.4g}")
    rounds = 0
    while True:
        rounds += 1
        bad = [n for n in nonfinite(kept) if n not in kept]
        if not bad or rounds == MAX_ROUNDS:
            break
        for node in bad:
            kept[node] = "not finite in FP16"
    if bad:
        log.warning("%s: still not finite in FP16 after %d rounds: %s", source.name, rounds, ", ".join(bad[:5]))
    convert(source, target, kept)
    log.info("%s: FP16 with %d nodes in FP32 (%d above the FP16 limit in FP32)", source.name, len(kept), len(overflow))
    return Fp16Result(target, emulation(model, kept), kept, overflow, sorted({producers[t] for t in masks}), naive, rounds)


def peak_table(overflow: dict[str, float], top: Optional[int] = 20) -> list[dict[str, float | str]]:
    rows = sorted(overflow.items(), key=lambda kv: -kv[1])
    return [{"node": n, "peak": p} for n, p in rows[:top]]
