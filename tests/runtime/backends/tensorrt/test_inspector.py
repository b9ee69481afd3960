"""Layer counts per precision from the engine inspector's JSON (TensorRT 10, ProfilingVerbosity.DETAILED).

SAMPLE is written by hand in the documented format (see runtime/backends/tensorrt/inspector.py):
what `get_engine_information(LayerInformationFormat.JSON)` gives for a small FP16 core_step_decode
with a Myelin region, a reformat, a pinned FP32 statistic and a Q/DQ INT8 convolution.
"""

from __future__ import annotations

import json

import pytest

from rdvla.runtime.backends.tensorrt.inspector import InspectorFormatError, layer_precisions, tensor_precision


def tensor(name: str, fmt: str, dims: list[int]) -> dict[str, object]:
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt}


SAMPLE = {
    "Layers": [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to {ForeignNode[/core/Add.../coda/MatMul]}", "LayerType": "Reformat",
         "Inputs": [tensor("latent", "Row major linear FP32", [1, 8, 32])],
         "Outputs": [tensor("Reformatted Input Tensor 0", "Row major linear FP16 format", [1, 8, 32])],
         "ParameterType": "Reformat", "Origin": "REFORMAT", "TacticValue": "0x0000000000000000", "StreamId": 0, "Metadata": ""},
        {"Name": "{ForeignNode[/core/Add.../coda/MatMul]}", "LayerType": "Myelin",
         "Inputs": [tensor("Reformatted Input Tensor 0", "Half", [1, 8, 32]), tensor("core0_keys", "Half", [1, 4, 577, 8])],
         "Outputs": [tensor("next_latent", "Float", [1, 8, 32]), tensor("/coda/out", "Half", [1, 8, 7])],
         "TacticName": "", "StreamId": 0, "Metadata": ""},
        {"Name": "/stats/Sub", "LayerType": "ElementWise",
         "Inputs": [tensor("actions", "Row major linear FP32", [56]), tensor("prev_actions", "Row major linear FP32", [56])],
         "Outputs": [tensor("/stats/Sub_output_0", "Row major linear FP32", [56])],
         "ParameterType": "ElementWise", "Operation": "SUB", "StreamId": 0, "Metadata": ""},
        {"Name": "/stats/ReduceMean", "LayerType": "Reduce",
         "Inputs": [tensor("/stats/Pow_output_0", "Row major linear FP32", [56])],
         "Outputs": [tensor("mse", "Row major linear FP32", [1])], "StreamId": 0, "Metadata": ""},
        {"Name": "/vision/conv", "LayerType": "CaskConvolution",
         "Inputs": [tensor("/vision/q", "Channel major INT8 format where channel % 16 == 0", [1, 3, 224, 224])],
         "Outputs": [tensor("/vision/conv_out", "Channel major FP16 format where channel % 8 == 0", [1, 64, 112, 112])],
         "StreamId": 0, "Metadata": ""},
        {"Name": "/ids/Shape", "LayerType": "Shape",
         "Inputs": [tensor("input_ids", "Row major linear Int64 format", [1, 56])],
         "Outputs": [tensor("/ids/Shape_output_0", "Row major linear Int64 format", [2])], "StreamId": 0, "Metadata": ""},
        {"Name": "/stats/eps", "LayerType": "Constant", "Inputs": [],
         "Outputs": [tensor("/stats/eps_output_0", "Row major linear FP32", [1])], "StreamId": 0, "Metadata": ""},
        {"Name": "/bf16/cast", "LayerType": "Cast", "Inputs": [tensor("x", "Row major linear BFloat16 format", [4])],
         "Outputs": [tensor("y", "Row major linear FP32", [4])], "StreamId": 0, "Metadata": ""},
    ],
    "Bindings": ["latent", "prev_actions", "core0_keys", "next_latent", "actions", "mse", "cosine", "input_ids"],
}


def test_counts_each_layer_by_the_precision_it_reads() -> None:
    counts = layer_precisions(json.dumps(SAMPLE))
    # reformat FP32->FP16 and the two statistics read FP32; Myelin reads Half; the Q/DQ conv reads INT8;
    # the Shape layer reads Int64 ("other"); the constant is no computation; the cast reads BFloat16.
    assert counts == {"BF16": 1, "FP16": 1, "FP32": 3, "INT8": 1, "other": 1}


def test_auxiliary_stream_signal_and_wait_pseudo_layers_are_not_counted() -> None:
    """TensorRT 10 writes a "signal"/"wait" pair where a layer on an auxiliary stream hands over to another."""
    sync = [{"Name": f"{kind} event 1", "LayerType": kind, "Inputs": [], "Outputs": [], "StreamId": stream, "Metadata": ""}
            for kind, stream in (("signal", 1), ("wait", 0))]
    counts = layer_precisions(json.dumps({**SAMPLE, "Layers": SAMPLE["Layers"] + sync}))
    assert counts == layer_precisions(json.dumps(SAMPLE)) and counts["other"] == 1


@pytest.mark.parametrize(
    "fmt, precision",
    [
        ("Row major linear FP32", "FP32"),
        ("Float", "FP32"),
        ("Row major linear FP16 format", "FP16"),
        ("Channel major FP16 format where channel % 8 == 0", "FP16"),
        ("Half", "FP16"),
        ("Row major linear BFloat16 format", "BF16"),
        ("Row major Int8 format", "INT8"),
        ("Four wide channel vectorized row major Int8 format", "INT8"),
        ("Row major linear FP8 format", "FP8"),
        ("Row major linear Int32", "other"),
        ("Row major linear BOOL", "other"),
        ("Unknown format", "other"),
    ],
)
def test_tensor_precision_from_the_format_text(fmt: str, precision: str) -> None:
    assert tensor_precision({"Name": "t", "Format/Datatype": fmt}) == precision


def test_tensorrt_11_data_type_field_read_as_fallback() -> None:
    assert tensor_precision({"Name": "t", "DataType": "Half", "Format": "Row major linear FP16 format (kLINEAR)"}) == "FP16"


def test_names_only_engine_information_is_refused() -> None:
    names_only = json.dumps({"Layers": ["/core/Add", "/core/MatMul"], "Bindings": ["latent"]})
    with pytest.raises(InspectorFormatError, match="build with ProfilingVerbosity.DETAILED"):
        layer_precisions(names_only)
    with pytest.raises(InspectorFormatError, match="not JSON"):
        layer_precisions("Layers: /core/Add")
    with pytest.raises(InspectorFormatError, match="no list of layers"):
        layer_precisions(json.dumps({"Bindings": []}))
