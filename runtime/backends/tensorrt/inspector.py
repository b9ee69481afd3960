"""How many layers of a built engine run in each precision, as TensorRT chose them (its engine inspector).

The FP32 layer constraints a build sets are requests: TensorRT's Myelin backend fuses whole
regions and may implement them in another precision, so the number of pinned layers overstates
what runs in FP32. After a build the builder asks the engine itself:
`engine.create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)`, which
describes every layer only when the engine was built with `ProfilingVerbosity.DETAILED` (NVIDIA
TensorRT Python API, EngineInspector; release/10.3 python/src/infer/pyCore.cpp binds both names).

The JSON of TensorRT 10 is `{"Layers": [...], "Bindings": [...]}`; with DETAILED verbosity each
layer is an object with "Name", "LayerType", "Inputs" and "Outputs", each tensor an object with
"Name", "Location", "Dimensions" and "Format/Datatype" (e.g. "Row major linear FP32",
"Channel major FP16 format where channel % 8 == 0", "Row major Int8 format"; Myelin's kernels say
"Half" or "Float"); with the default LAYER_NAMES_ONLY the layers are bare strings. This is the
schema NVIDIA's own engine explorer reads (NVIDIA/TensorRT release/10.3,
tools/experimental/trt-engine-explorer/trex/parser.py, layer.py, activations.py), which takes a
layer's precision from its first input and leaves out "Constant" and "NoOp" layers; so does
`layer_precisions`. It also drops the "signal" and "wait" pseudo-layers (trex/parser.py,
`__remove_signal_wait`, at tag v10.3.0): they synchronise TensorRT's auxiliary streams, compute
nothing, and would otherwise be counted in the "other" precision. TensorRT 11 splits "Format/Datatype" into separate fields, a "DataType" among
them (TensorRT 11 migration guide, IEngineInspector JSON output), read here as a fallback.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

# Data type words of "Format/Datatype" -> precision. Word boundaries keep "Float" from matching "BFloat16".
_PRECISION_WORDS = (
    (re.compile(r"\b(FP32|Float)\b"), "FP32"),
    (re.compile(r"\b(FP16|Half)\b"), "FP16"),
    (re.compile(r"\b(BF16|BFloat16)\b"), "BF16"),
    (re.compile(r"\b(Int8|INT8)\b"), "INT8"),
    (re.compile(r"\bFP8\b"), "FP8"),
)
_NOT_COMPUTE = ("Constant", "NoOp", "signal", "wait")  # "signal"/"wait": auxiliary-stream sync, lower case as written
OTHER = "other"  # integer, boolean or unknown formats: shape arithmetic, indices, masks


class InspectorFormatError(ValueError):
    """Engine information that is not the inspector's detailed JSON."""


def tensor_precision(tensor: Mapping[str, Any]) -> str:
    """FP32 / FP16 / BF16 / INT8 / FP8 of one tensor description, or "other"."""
    described = next((str(v) for k, v in tensor.items() if k.lower() == "format/datatype"), None)
    if described is None:
        described = str(tensor.get("DataType", ""))
    for pattern, precision in _PRECISION_WORDS:
        if pattern.search(described):
            return precision
    return OTHER


def layer_precisions(engine_information: str) -> dict[str, int]:
    """Layer count per precision from `get_engine_information(LayerInformationFormat.JSON)`.

    Raises InspectorFormatError when the engine was not built with ProfilingVerbosity.DETAILED
    (layers are then names only) or the text is not the inspector's JSON.
    """
    try:
        info = json.loads(engine_information)
    except json.JSONDecodeError as exc:
        raise InspectorFormatError(f"the engine information is not JSON ({exc})") from None
    layers = info.get("Layers") if isinstance(info, dict) else None
    if not isinstance(layers, list):
        raise InspectorFormatError("the engine information has no list of layers")
    counts: dict[str, int] = {}
    for layer in layers:
        if not isinstance(layer, dict):
            raise InspectorFormatError("the engine information names layers only: build with ProfilingVerbosity.DETAILED")
        if layer.get("LayerType") in _NOT_COMPUTE:
            continue
        tensors = layer.get("Inputs") or layer.get("Outputs") or []
        precision = tensor_precision(tensors[0]) if tensors else OTHER
        counts[precision] = counts.get(precision, 0) + 1
    return dict(sorted(counts.items()))
