"""What TensorRT 10.3's ONNX parser (JetPack 6.1/6.2) refuses or misreads, checked on ONNX files before
anything spends time on them: `rdvla export` and `rdvla calibrate` on the graphs they write,
`rdvla build` on the Jetson before TensorRT parses them.

`RULES` is the one table: each rule names the construct, the TensorRT / parser versions it affects,
where that fact comes from, the fix, and a predicate over the parsed graph (`onnx_reader`). A
violation reads `graph <file>: node <name> (<op_type>): <rule id>: <what is wrong>; <fix>`.

Sources. onnx-tensorrt was read at its release branches 8.6-GA, 10.0-GA and 10.1-GA
(github.com/onnx/onnx-tensorrt); TensorRT 10.3's parser is onnx-tensorrt commit 62bdde2a (the
parsers/onnx submodule of NVIDIA/TensorRT release/10.3), whose sources were not available. So the operator
table is docs/operators.md at 10.1-GA with the changes the 10.2 and 10.3 entries of
docs/Changelog.md list (10.3: tensor `axes` for Slice; nothing added to or removed from the
operator list; 10.4 is the first to add operators since). Operator names and types are facts
transcribed from that table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

from rdvla.runtime.graph_check.onnx_reader import (
    BOOL, BFLOAT16, DOUBLE, FLOAT, FLOAT16, FLOAT8E4M3FN, INT4, INT8, INT32, INT64, TYPE_NAMES, UINT8,
    Model, Node, read_model, tensor_types,
)

log = logging.getLogger(__name__)

OPERATORS_DOC = "onnx/onnx-tensorrt docs/operators.md (10.1-GA; 10.2/10.3 changes from docs/Changelog.md)"
TENSORRT = "TensorRT 10.3 (JetPack 6.1/6.2)"

# The supported rows (Y) of onnx-tensorrt docs/operators.md at 10.1-GA: operator -> "Supported Types".
# Later parsers add operators (10.4: BlackmanWindow, HammingWindow, HannWindow; 10.5: STFT), so this is what 10.3 knows.
SUPPORTED_TYPES: dict[str, frozenset[str]] = {op: frozenset(types.split()) for op, types in (line.split(":") for line in """
Abs: FP32 FP16 BF16 INT32 INT64
Acos: FP32 FP16 BF16
Acosh: FP32 FP16 BF16
Add: FP32 FP16 BF16 INT32 INT64
And: BOOL
ArgMax: FP32 FP16 BF16 INT32 INT64
ArgMin: FP32 FP16 BF16 INT32 INT64
Asin: FP32 FP16 BF16
Asinh: FP32 FP16 BF16
Atan: FP32 FP16 BF16
Atanh: FP32 FP16 BF16
AveragePool: FP32 FP16 BF16
BatchNormalization: FP32 FP16 BF16
Cast: FP32 FP16 BF16 INT32 INT64 UINT8 BOOL
CastLike: FP32 FP16 BF16 INT32 INT64 UINT8 BOOL
Ceil: FP32 FP16 BF16
Celu: FP32 FP16 BF16
Clip: FP32 FP16 BF16
Concat: FP32 FP16 BF16 INT32 INT64 BOOL
Constant: FP32 FP16 BF16 INT32 INT64 BOOL
ConstantOfShape: FP32 FP16 BF16 INT32 INT64 BOOL
Conv: FP32 FP16 BF16
ConvTranspose: FP32 FP16 BF16
Cos: FP32 FP16 BF16
Cosh: FP32 FP16 BF16
CumSum: FP32 FP16 BF16
DeformConv: FP32 FP16
DepthToSpace: FP32 FP16 BF16 INT32 INT64
DequantizeLinear: INT8 FP8 INT4
Div: FP32 FP16 BF16 INT32 INT64
Dropout: FP32 FP16 BF16
Einsum: FP32 FP16 BF16
Elu: FP32 FP16 BF16
Equal: FP32 FP16 BF16 INT32 INT64
Erf: FP32 FP16 BF16
Exp: FP32 FP16 BF16
Expand: FP32 FP16 BF16 INT32 INT64 BOOL
EyeLike: FP32 FP16 BF16 INT32 INT64 BOOL
Flatten: FP32 FP16 BF16 INT32 INT64 BOOL
Floor: FP32 FP16 BF16
Gather: FP32 FP16 BF16 INT32 INT64 BOOL
GatherElements: FP32 FP16 BF16 INT32 INT64 BOOL
GatherND: FP32 FP16 BF16 INT32 INT64 BOOL
Gelu: FP32 FP16 BF16 INT8 INT32 INT64
Gemm: FP32 FP16 BF16
GlobalAveragePool: FP32 FP16 BF16
GlobalLpPool: FP32 FP16 BF16
GlobalMaxPool: FP32 FP16 BF16
Greater: FP32 FP16 BF16 INT32 INT64
GreaterOrEqual: FP32 FP16 BF16 INT32 INT64
GridSample: FP32 FP16
GroupNormalization: FP32 FP16 BF16
GRU: FP32 FP16 BF16
HardSigmoid: FP32 FP16 BF16
HardSwish: FP32 FP16 BF16
Hardmax: FP32 FP16 BF16
Identity: FP32 FP16 BF16 INT32 INT64 BOOL
If: FP32 FP16 BF16 INT32 INT64 BOOL
ImageScaler: FP32 FP16 BF16
InstanceNormalization: FP32 FP16 BF16
IsInf: FP32 FP16 BF16
IsNaN: FP32 FP16 BF16 INT32 INT64
LayerNormalization: FP32 FP16 BF16
LeakyRelu: FP32 FP16 BF16
Less: FP32 FP16 BF16 INT32 INT64
LessOrEqual: FP32 FP16 BF16 INT32 INT64
Log: FP32 FP16 BF16
LogSoftmax: FP32 FP16 BF16
Loop: FP32 FP16 BF16 INT32 INT64 BOOL
LRN: FP32 FP16 BF16
LSTM: FP32 FP16 BF16
LpNormalization: FP32 FP16 BF16
LpPool: FP32 FP16 BF16
MatMul: FP32 FP16 BF16
Max: FP32 FP16 BF16 INT32 INT64
MaxPool: FP32 FP16 BF16
Mean: FP32 FP16 BF16 FP8 INT32 INT64
MeanVarianceNormalization: FP32 FP16 BF16
Min: FP32 FP16 BF16 INT32 INT64
Mish: FP32 FP16
Mod: FP32 FP16 BF16 INT32 INT64
Mul: FP32 FP16 BF16 INT32 INT64
Neg: FP32 FP16 BF16 INT32 INT64
NonMaxSuppression: FP32 FP16
NonZero: FP32 FP16
Not: BOOL
OneHot: FP32 FP16 BF16 INT32 INT64 BOOL
Or: BOOL
Pad: FP32 FP16 BF16 INT32 INT64
ParametricSoftplus: FP32 FP16 BF16
Pow: FP32 FP16 BF16
PRelu: FP32 FP16 BF16
QuantizeLinear: FP32 FP16 BF16
RandomNormal: FP32 FP16 BF16
RandomNormalLike: FP32 FP16 BF16
RandomUniform: FP32 FP16 BF16
RandomUniformLike: FP32 FP16 BF16
Range: FP32 FP16 BF16 INT32 INT64
Reciprocal: FP32 FP16 BF16
ReduceL1: FP32 FP16 BF16 INT32 INT64
ReduceL2: FP32 FP16 BF16 INT32 INT64
ReduceLogSum: FP32 FP16 BF16 INT32 INT64
ReduceLogSumExp: FP32 FP16 BF16 INT32 INT64
ReduceMax: FP32 FP16 BF16 INT32 INT64
ReduceMean: FP32 FP16 BF16 INT32 INT64
ReduceMin: FP32 FP16 BF16 INT32 INT64
ReduceProd: FP32 FP16 BF16 INT32 INT64
ReduceSum: FP32 FP16 BF16 INT32 INT64
ReduceSumSquare: FP32 FP16 BF16 INT32 INT64
Relu: FP32 FP16 BF16 INT32 INT64
Reshape: FP32 FP16 BF16 INT32 INT64 BOOL
Resize: FP32 FP16 BF16
ReverseSequence: FP32 FP16 BF16 INT32 INT64 BOOL
RNN: FP32 FP16 BF16
RoiAlign: FP32 FP16
Round: FP32 FP16 BF16
ScaledTanh: FP32 FP16 BF16
Scan: FP32 FP16 BF16
Scatter: FP32 FP16 BF16 INT32 INT64
ScatterElements: FP32 FP16 BF16 INT32 INT64
ScatterND: FP32 FP16 BF16 INT32 INT64
Selu: FP32 FP16 BF16
Shape: FP32 FP16 BF16 INT32 INT64 BOOL
Shrink: FP32 FP16 BF16 INT32 INT64
Sigmoid: FP32 FP16 BF16
Sign: FP32 FP16 BF16 INT32 INT64
Sin: FP32 FP16 BF16
Sinh: FP32 FP16 BF16
Size: FP32 FP16 BF16 INT32 INT64 BOOL
Slice: FP32 FP16 BF16 INT32 INT64 BOOL
Softmax: FP32 FP16 BF16
Softplus: FP32 FP16 BF16
Softsign: FP32 FP16 BF16
SpaceToDepth: FP32 FP16 BF16 INT32 INT64
Split: FP32 FP16 BF16 INT32 INT64 BOOL
Sqrt: FP32 FP16 BF16
Squeeze: FP32 FP16 BF16 INT32 INT64 BOOL
Sub: FP32 FP16 BF16 INT32 INT64
Sum: FP32 FP16 BF16 INT32 INT64
Tan: FP32 FP16 BF16
Tanh: FP32 FP16 BF16
ThresholdedRelu: FP32 FP16 BF16
Tile: FP32 FP16 BF16 INT32 INT64 BOOL
TopK: FP32 FP16 BF16 INT32 INT64
Transpose: FP32 FP16 BF16 INT32 INT64 BOOL
Trilu: FP32 FP16 BF16 INT32 INT64 BOOL
Unsqueeze: FP32 FP16 BF16 INT32 INT64 BOOL
Upsample: FP32 FP16 BF16
Where: FP32 FP16 BF16 INT32 INT64 BOOL
Xor: BOOL
""".strip().splitlines())}
OPSET_RANGE = (9, 20)  # docs/operators.md (10.0-GA, 10.1-GA): "the inclusive range of opset 9 to opset 20"

# ONNX element type -> the name operators.md uses; DOUBLE is absent: the parser casts it to FLOAT.
_DOC_TYPE = {FLOAT: "FP32", FLOAT16: "FP16", BFLOAT16: "BF16", INT32: "INT32", INT64: "INT64", BOOL: "BOOL",
             UINT8: "UINT8", INT8: "INT8", FLOAT8E4M3FN: "FP8", INT4: "INT4"}
# The ONNX types the parser converts (operators.md header; importerUtils.cpp convertDtype, 10.0-GA/10.1-GA).
PARSER_TYPES = frozenset({DOUBLE, *_DOC_TYPE})

# Binary element-wise ops whose TensorRT ElementWise layer refuses BOOL (everything but AND/OR/XOR/EQUAL),
# the reductions (their Supported Types list no BOOL) and CumSum.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Min", "Max", "Sum", "Mean",
                "Greater", "GreaterOrEqual", "Less", "LessOrEqual"}
_REDUCTIONS = {"ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
_ARITHMETIC = _ELEMENTWISE | _REDUCTIONS | {"CumSum"}
# Which inputs carry the type the Supported Types column speaks of: input 0 unless listed here.
_TYPED_INPUTS: dict[str, Optional[tuple[int, ...]]] = {
    **{op: None for op in _ELEMENTWISE | {"Equal", "And", "Or", "Xor", "Concat", "MatMul", "Gemm"}},  # None: all inputs
    "Where": (1, 2),
}
# Inputs 10.3's importers read as weights (operators.md Restrictions: "must be an initializer"; importerUtils.cpp
# reduceTensor asserts "Axis input must be an initializer!"): op -> (input index, what it is). Unsqueeze's
# axes need only be a constant ("must be a constant tensor": values known at build time). Slice's `axes` may be
# a tensor since 10.3 (docs/Changelog.md, 10.3 GA).
_WEIGHT_INPUTS = {**{op: (1, "axes") for op in _REDUCTIONS | {"Squeeze"}}, "CumSum": (1, "axis"), "Pad": (3, "axes")}
_CONSTANT_INPUTS = {"Unsqueeze": (1, "axes")}
_QDQ_ZERO_POINT_TYPES = {INT8, FLOAT8E4M3FN, INT4}
_NOT_CONSTANT = {"RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}


@dataclass(frozen=True)
class Violation:
    graph: str
    where: str  # "node <name> (<op_type>)", "initializer <name>", "input <name>" or "model"
    rule: str
    message: str

    def __str__(self) -> str:
        return f"graph {self.graph}: {self.where}: {self.rule}: {self.message}"


class IncompatibleGraphError(ValueError):
    """A graph holds a construct TensorRT 10.3's ONNX parser refuses (one line: the first violation)."""


@dataclass(frozen=True)
class Facts:
    """What the predicates read: the model, every tensor's element type, and which tensors are constants."""

    model: Model
    types: dict[str, int]
    weights: frozenset[str]  # initializers and Constant outputs: what the parser imports as weights
    constants: frozenset[str]  # weights and what nodes compute from weights alone: build-time constants to TensorRT
    producers: dict[str, Node]

    @classmethod
    def of(cls, model: Model) -> "Facts":
        graph = model.graph
        weights = set(graph.initializers) | {out for n in graph.nodes if n.op_type == "Constant" for out in n.outputs}
        constants = set(weights)
        for node in graph.nodes:  # topological order: one pass closes the set
            inputs = [name for name in node.inputs if name]
            if inputs and node.op_type not in _NOT_CONSTANT and all(name in constants for name in inputs):
                constants.update(out for out in node.outputs if out)
        producers = {out: n for n in graph.nodes for out in n.outputs if out}
        return cls(model, tensor_types(graph), frozenset(weights), frozenset(constants), producers)

    def type_of(self, name: str) -> int:
        return self.types.get(name, 0)


Finding = tuple[str, str]  # (where, what is wrong)


def at(node: Node) -> str:
    return f"node {node.name or '<unnamed: ' + (node.outputs or ('?',))[0] + '>'} ({node.op_type})"


def _type_name(elem_type: int) -> str:
    return TYPE_NAMES.get(elem_type, str(elem_type))


@dataclass(frozen=True)
class Rule:
    id: str
    construct: str
    affects: str  # TensorRT / parser versions
    source: str  # where the fact comes from
    fix: str
    find: Callable[[Facts], Iterable[Finding]]


# --- predicates ------------------------------------------------------------------------------
def _trilu_bool(facts: Facts) -> Iterator[Finding]:
    for node in facts.model.graph.nodes:
        if node.op_type == "Trilu" and node.inputs and facts.type_of(node.inputs[0]) == BOOL:
            yield at(node), f"Trilu of the BOOL tensor {node.inputs[0]!r}"


def _bool_arithmetic(facts: Facts) -> Iterator[Finding]:
    for node in facts.model.graph.nodes:
        if node.op_type in _ARITHMETIC:
            bools = [name for name in node.inputs if name and facts.type_of(name) == BOOL]
            if bools:
                yield at(node), f"{node.op_type} of the BOOL tensor {bools[0]!r}"


def _opset(facts: Facts) -> Iterator[Finding]:
    version = facts.model.opset_imports.get("")
    low, high = OPSET_RANGE
    if version is None:
        yield "model", "the model imports no ai.onnx opset"
    elif not low <= version <= high:
        yield "model", f"ai.onnx opset {version} lies outside {low}..{high}"


def _unsupported_op(facts: Facts) -> Iterator[Finding]:
    local = {name for _, name in facts.model.functions}
    for node in facts.model.graph.walk():
        if node.op_type not in SUPPORTED_TYPES and node.op_type not in local:
            domain = f" (domain {node.domain})" if node.domain else ""
            yield at(node), (f"{node.op_type}{domain} has no importer "
                             "(the parser would look for a TensorRT plugin of that name)")


def _input_type(facts: Facts) -> Iterator[Finding]:
    for node in facts.model.graph.nodes:
        allowed = SUPPORTED_TYPES.get(node.op_type)
        if allowed is None or (node.op_type in ("Trilu", *_ARITHMETIC) and BOOL in _input_types(facts, node)):
            continue  # an unknown op, or a case a sharper rule above reports
        indices = _TYPED_INPUTS.get(node.op_type, (0,))
        for i, name in enumerate(node.inputs):
            if name and (indices is None or i in indices):
                elem_type = facts.type_of(name)
                doc = _DOC_TYPE.get(elem_type)
                if elem_type and elem_type != DOUBLE and doc not in allowed:
                    yield at(node), (f"input {name!r} is {_type_name(elem_type)}; {node.op_type} takes "
                                     f"{', '.join(sorted(allowed))}")
                    break


def _input_types(facts: Facts, node: Node) -> set[int]:
    return {facts.type_of(name) for name in node.inputs if name}


def _constant_inputs(facts: Facts) -> Iterator[Finding]:
    for node in facts.model.graph.nodes:
        for table, known, kind in ((_WEIGHT_INPUTS, facts.weights, "an initializer or Constant"),
                                   (_CONSTANT_INPUTS, facts.constants, "computed from constants alone")):
            spec = table.get(node.op_type)
            if spec is None:
                continue
            index, what = spec
            if index < len(node.inputs) and node.inputs[index] and node.inputs[index] not in known:
                yield at(node), f"`{what}` comes from the tensor {node.inputs[index]!r}, not {kind}"


def _qdq_zero_point(facts: Facts) -> Iterator[Finding]:
    for node in facts.model.graph.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.inputs) < 3 or not node.inputs[2]:
            continue
        name = node.inputs[2]
        values = _constant_values(facts, name)
        elem_type = facts.type_of(name)
        if elem_type and elem_type not in _QDQ_ZERO_POINT_TYPES:
            yield at(node), f"zero point {name!r} is {_type_name(elem_type)}, which TensorRT reads as INT8"
        elif values is not None and np.any(values != 0):
            yield at(node), f"zero point {name!r} is not all zeros (asymmetric quantization)"


def _qdq_scale(facts: Facts) -> Iterator[Finding]:
    for node in facts.model.graph.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.inputs) < 2:
            continue
        name = node.inputs[1]
        if name not in facts.constants:
            yield at(node), f"scale {name!r} is not a build-time constant"
            continue
        values = _constant_values(facts, name)
        if values is not None and not np.all(values.astype(np.float64) > 0):
            yield at(node), f"scale {name!r} has coefficients that are not positive"


def _constant_values(facts: Facts, name: str) -> Optional[np.ndarray]:
    tensor = facts.model.graph.initializers.get(name)
    if tensor is None and name in facts.producers and facts.producers[name].op_type == "Constant":
        value = facts.producers[name].attributes.get("value")
        tensor = value if hasattr(value, "array") else None
    return tensor.array() if tensor is not None else None


def _layernorm_outputs(facts: Facts) -> Iterator[Finding]:
    for node in facts.model.graph.nodes:
        extra = [name for name in node.outputs[1:] if name]
        if node.op_type == "LayerNormalization" and extra:
            yield at(node), f"LayerNormalization also writes {', '.join(map(repr, extra))}; only output Y is imported"


def _tensor_type(facts: Facts) -> Iterator[Finding]:
    graph = facts.model.graph
    io = {v.name for v in (*graph.inputs, *graph.outputs)}
    consumers: dict[str, set[str]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            consumers.setdefault(name, set()).add(node.op_type)
    quantization = {"Cast", "QuantizeLinear", "DequantizeLinear"}
    for name, elem_type in facts.types.items():
        uint8_inside = elem_type == UINT8 and name not in io and not consumers.get(name, set()) <= quantization
        if elem_type in PARSER_TYPES and not uint8_inside:
            continue
        producer = facts.producers.get(name)
        where = at(producer) if producer else ("initializer" if name in graph.initializers else "input") + f" {name}"
        what = "UINT8, which TensorRT takes only as network input or output" if uint8_inside else _type_name(elem_type)
        yield where, f"tensor {name!r} is {what}"


def _constant_attribute(facts: Facts) -> Iterator[Finding]:
    for node in facts.model.graph.nodes:
        bad = sorted({"sparse_value", "value_string", "value_strings"} & set(node.attributes))
        if node.op_type == "Constant" and bad:
            yield at(node), f"Constant with the attribute {bad[0]}"


_OPS_DOC = "docs/operators.md (10.1-GA, 10.0-GA)"
RULES: tuple[Rule, ...] = (
    Rule(
        "trt-trilu-bool", "Trilu on a BOOL input",
        "onnx-tensorrt 8.5-10.1 (read in their sources); 10.3 (JetPack 6.1/6.2) assumed: its sources were not "
        "available; a later importerUtils.cpp (one that knows FP4, so 10.8+) makes the zeros with a Slice, without PROD",
        "onnx/onnx-tensorrt Trilu importer: builtin_op_importers.cpp (8.6-GA), onnxOpImporters.cpp (10.0-GA, 10.1-GA) "
        "selects against createZeroTensor(data) = ElementWise kPROD of the data with 0 (onnx2trt_utils.cpp 8.6-GA, "
        "importerUtils.cpp 10.0-GA/10.1-GA); NVIDIA/TensorRT include/NvInfer.h (release/10.3) ElementWiseOperation: "
        "all but kAND/kOR/kXOR need float, INT8, INT32 or INT64 inputs",
        "build the mask by comparing two index ranges (Range, Unsqueeze, Less/Greater on INT64) feeding Where",
        _trilu_bool,
    ),
    Rule(
        "trt-bool-arithmetic", "element-wise arithmetic, comparison or reduction with a BOOL input",
        f"TensorRT 8.x-10.3: read in the 10.0/10.1 parsers and {TENSORRT}'s NvInfer.h",
        "onnx/onnx-tensorrt importerUtils.cpp elementwiseCheck (10.0-GA, 10.1-GA): SUM, PROD, SUB, DIV, MIN, MAX, "
        "FLOOR_DIV, GREATER, LESS refuse BOOL, POW also integers; NVIDIA/TensorRT include/NvInfer.h (release/10.3) "
        f"ElementWiseOperation; {_OPS_DOC}: no BOOL among the Reduce* and CumSum types",
        "Cast the BOOL tensor to FLOAT or INT32 first, or use And/Or/Not/Where",
        _bool_arithmetic,
    ),
    Rule(
        "trt-opset", f"an ai.onnx opset outside {OPSET_RANGE[0]}..{OPSET_RANGE[1]}",
        "TensorRT 10.0/10.1 parsers as documented, 10.3 assumed the same (later ones read newer opsets)",
        f"onnx/onnx-tensorrt {_OPS_DOC}: 'supports operators in the inclusive range of opset 9 to opset 20'",
        f"export with an opset in {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (rdvla exports opset 18)",
        _opset,
    ),
    Rule(
        "trt-unsupported-op", "an operator outside the parser's supported list",
        TENSORRT,
        f"onnx/onnx-tensorrt {OPERATORS_DOC}; ModelImporter.cpp (10.1-GA) dispatches by op_type alone, then to a "
        "plugin of the same name",
        "express it with supported operators, or provide it as a TensorRT plugin",
        _unsupported_op,
    ),
    Rule(
        "trt-input-type", "an operator input of a type outside the operator's Supported Types",
        TENSORRT,
        f"onnx/onnx-tensorrt {OPERATORS_DOC}, Supported Types column",
        "Cast the input to a type the operator takes",
        _input_type,
    ),
    Rule(
        "trt-constant-input",
        "Reduce*/Squeeze/Pad `axes` or CumSum `axis` not an initializer; Unsqueeze `axes` not constant",
        f"{TENSORRT} (Squeeze/Unsqueeze take tensor axes from 10.7, Pad from 10.4)",
        f"onnx/onnx-tensorrt {_OPS_DOC}, Restrictions column; docs/Changelog.md 10.4 GA, 10.7 GA",
        "make it an initializer (constant-fold the graph)",
        _constant_inputs,
    ),
    Rule(
        "trt-qdq-zero-point", "a Q/DQ zero point that is not INT8 (FP8/INT4) zeros",
        f"TensorRT 10.0-10.3 (read in the 10.0/10.1 parsers and {TENSORRT}'s NvInfer.h)",
        "onnx/onnx-tensorrt onnxOpImporters.cpp QuantDequantLinearHelper (10.0-GA, 10.1-GA): symmetric only, a UINT8 "
        f"zero point is read as INT8; {_OPS_DOC}: 'x_zero_point must be zero', 'y_zero_point must be 0'",
        "quantize symmetrically to INT8 (zero points 0 of type INT8)",
        _qdq_zero_point,
    ),
    Rule(
        "trt-qdq-scale", "a Q/DQ scale that is not a build-time constant, or not positive",
        f"TensorRT 10.0-10.3 (read in the 10.0/10.1 parsers and {TENSORRT}'s NvInfer.h)",
        "onnx/onnx-tensorrt onnxOpImporters.cpp QuantDequantLinearHelper (10.0-GA, 10.1-GA): 'Scale coefficients must "
        "all be positive'; NVIDIA/TensorRT include/NvInfer.h (release/10.3) IQuantizeLayer/IDequantizeLayer: 'The "
        "subgraph which terminates with the scale tensor must be a build-time constant'",
        "store positive scales as initializers",
        _qdq_scale,
    ),
    Rule(
        "trt-layernorm-outputs", "LayerNormalization with its Mean or InvStdDev output used",
        TENSORRT,
        f"onnx/onnx-tensorrt {_OPS_DOC}: 'Only the first output `Y` is supported'",
        "export LayerNormalization with the one output Y (compute statistics separately if needed)",
        _layernorm_outputs,
    ),
    Rule(
        "trt-tensor-type", "a tensor of a type the parser cannot convert (UINT8 only as network I/O)",
        TENSORRT,
        "onnx/onnx-tensorrt docs/operators.md (10.1-GA) data types and 'UINT8 is only supported as network input or "
        "output'; importerUtils.cpp convertDtype (10.1-GA)",
        "Cast to FLOAT, FLOAT16, INT32 or INT64 where the tensor is made",
        _tensor_type,
    ),
    Rule(
        "trt-constant-attribute", "Constant holding a sparse tensor or strings",
        TENSORRT,
        f"onnx/onnx-tensorrt {_OPS_DOC}: '`sparse_value`, `value_string`, and `value_strings` attributes are unsupported'",
        "store a dense numeric tensor (`value`)",
        _constant_attribute,
    ),
)


def check_model(model: Model, name: Optional[str] = None) -> list[Violation]:
    """Every rule's violations in `model`, in the order of `RULES`, naming the graph `name` (default: its path)."""
    facts = Facts.of(model)
    graph = name or str(model.path)
    return [Violation(graph, where, rule.id, f"{what}; {rule.fix}") for rule in RULES for where, what in rule.find(facts)]


def check_graph(path: Union[str, Path], name: Optional[str] = None) -> list[Violation]:
    """The violations of the ONNX file at `path` (reads its structure only, never its weights); violations and
    read errors (OnnxReadError) call it `name` (default: its path)."""
    return check_model(read_model(path, name), name)


def require_compatible(paths: Iterable[Union[str, Path]], root: Union[str, Path, None] = None) -> None:
    """Check every graph; raise IncompatibleGraphError with the first violation (all are logged).

    With `root`, graphs (paths under it) are named relative to it: `rdvla export` checks them in a scratch
    folder that is renamed once they pass, so its errors name them as they will be found in the bundle.
    """
    found: list[Violation] = []
    checked = 0
    for path in paths:
        found += check_graph(path, str(Path(path).relative_to(root)) if root is not None else None)
        checked += 1
    for violation in found:
        log.error("%s", violation)
    if found:
        more = f" (and {len(found) - 1} more, logged)" if len(found) > 1 else ""
        raise IncompatibleGraphError(f"{found[0]}{more}")
    log.info("%d graph(s) use only what %s's ONNX parser imports", checked, TENSORRT)
