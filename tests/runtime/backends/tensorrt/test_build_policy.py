"""The builder's decisions, as plain functions: precision, profile shapes, FP32 layers, error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from rdvla.runtime.backends.tensorrt.build_memory import Memory, graph_footprint, parse_meminfo
from rdvla.runtime.backends.tensorrt.builder import attach_timing_cache, build_failure_message, format_parser_error, profile_shapes
from rdvla.runtime.backends.tensorrt.precision import (
    BuildError,
    GraphSource,
    LayerInfo,
    check_precision,
    fp32_layers,
    halting_chain,
    precision_plan,
)
from rdvla.runtime.manifest import TensorSpec

ORIN = (8, 7)


@pytest.mark.parametrize("name, canonical", [("fp16", "fp16"), ("FP16", "fp16"), ("half", "fp16"), ("int8", "int8"), ("fp32", "fp32")])
def test_supported_precisions(name: str, canonical: str) -> None:
    assert check_precision(name, ORIN) == canonical
    assert check_precision(name) == canonical


@pytest.mark.parametrize("precision", ["fp8", "fp4", "nvfp4"])
def test_fp8_fp4_refused_on_orin(precision: str) -> None:
    with pytest.raises(BuildError) as info:
        check_precision(precision, ORIN)
    message = str(info.value)
    assert "this GPU is 8.7" in message and "no FP8/FP4 tensor cores" in message
    assert "build fp16 or int8 or fp32" in message
    assert ("8.9" in message) if precision == "fp8" else ("10.0" in message)


def test_fp8_refused_even_where_the_gpu_has_it() -> None:
    with pytest.raises(BuildError, match="bundles do not carry"):
        check_precision("fp8", (9, 0))


def test_precision_the_gpu_lacks() -> None:
    with pytest.raises(BuildError, match=r"int8 needs compute capability 6.1 .* this GPU is 5.3: build fp16 or fp32"):
        check_precision("int8", (5, 3))


def test_unknown_precision() -> None:
    with pytest.raises(BuildError, match="unknown precision 'bf16'"):
        check_precision("bf16", ORIN)


def src(quantized: bool = False, strongly_typed: bool = False) -> GraphSource:
    return GraphSource("core_step", "core_step.onnx", quantized, strongly_typed)


def test_precision_plan() -> None:
    fp16 = precision_plan("fp16", src())
    assert fp16.set_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS") and fp16.pin_fp32 and not fp16.strongly_typed
    int8 = precision_plan("int8", src(quantized=True))
    assert int8.set_flags == ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS") and int8.pin_fp32
    # an int8 build of a graph without Q/DQ: FP16 kernels, never implicit (calibrator) INT8
    assert precision_plan("int8", src()).set_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    fp32 = precision_plan("fp32", src())
    assert fp32.set_flags == () and fp32.clear_flags == ("TF32",) and not fp32.pin_fp32
    typed = precision_plan("int8", src(quantized=True, strongly_typed=True))
    assert typed.strongly_typed and typed.set_flags == () and not typed.pin_fp32
    assert typed.recorded_flags == ("STRONGLY_TYPED",) and fp32.recorded_flags == ("no TF32",)
    # the calibrated FP16 graphs are strongly typed: built as typed, no flags, no pinning
    half = precision_plan("fp16", src(strongly_typed=True))
    assert half.strongly_typed and half.set_flags == () and not half.pin_fp32


def test_profile_shapes_clamp_the_typical_length() -> None:
    ids = TensorSpec("input_ids", "int64", (1, "prompt_len"))
    assert profile_shapes(ids, {"prompt_len": (8, 64)}) == ((1, 8), (1, 56), (1, 64))
    assert profile_shapes(ids, {"prompt_len": (8, 40)}) == ((1, 8), (1, 40), (1, 40))
    assert profile_shapes(ids, {"prompt_len": (60, 90)}) == ((1, 60), (1, 60), (1, 90))
    assert profile_shapes(TensorSpec("proprio", "float32", (1, 8)), {"prompt_len": (8, 64)}) is None


def layer(index: int, kind: str, inputs: tuple[str, ...], outputs: tuple[str, ...], op: Optional[str] = None, floats: bool = True) -> LayerInfo:
    return LayerInfo(index, kind, op, inputs, outputs, floats)


def test_decomposed_rmsnorm_stays_fp32_up_to_the_next_matmul() -> None:
    layers = [
        layer(0, "ELEMENTWISE", ("x", "two"), ("sq",), "POW"),
        layer(1, "REDUCE", ("sq",), ("var",)),
        layer(2, "ELEMENTWISE", ("var", "eps"), ("var_eps",), "SUM"),
        layer(3, "UNARY", ("var_eps",), ("std",), "SQRT"),
        layer(4, "ELEMENTWISE", ("x", "std"), ("normed",), "DIV"),
        layer(5, "ELEMENTWISE", ("normed", "weight"), ("scaled",), "PROD"),
        layer(6, "MATRIX_MULTIPLY", ("scaled", "w_q"), ("q",)),
        layer(7, "ELEMENTWISE", ("q", "bias"), ("q_b",), "SUM"),  # past the MatMul: FP16 again
    ]
    pinned = fp32_layers(layers, network_inputs=(), network_outputs=())
    assert sorted(pinned) == [0, 1, 2, 3, 4, 5]
    assert pinned[1] == "reduction" and pinned[2] == "element-wise on an FP32 value"


def test_norm_softmax_and_outputs_pinned_integer_layers_not() -> None:
    layers = [
        layer(0, "NORMALIZATION", ("h",), ("ln",)),
        layer(1, "SOFTMAX", ("scores",), ("probs",)),
        layer(2, "MATRIX_MULTIPLY", ("probs", "v"), ("attn",)),
        layer(3, "ELEMENTWISE", ("latent", "attn"), ("next_latent",), "SUM"),
        layer(4, "REDUCE", ("shape",), ("n",), floats=False),  # shape arithmetic: must stay untouched
        layer(5, "ELEMENTWISE", ("n", "one"), ("n1",), "SUM", floats=False),
        layer(6, "ELEMENTWISE", ("ln", "g"), ("lng",), "PROD"),  # after a fused norm: no FP32 spread
    ]
    pinned = fp32_layers(layers, network_inputs=(), network_outputs={"next_latent"})
    assert pinned == {0: "normalisation", 1: "softmax", 3: "writes an FP32 network output"}


def test_state_residual_stream_and_halting_statistics_stay_fp32() -> None:
    layers = [
        layer(0, "ELEMENTWISE", ("latent", "injection"), ("h0",), "SUM"),  # the latent enters in FP32
        layer(1, "NORMALIZATION", ("h0",), ("n0",)),
        layer(2, "MATRIX_MULTIPLY", ("n0", "w1"), ("m0",)),  # FP16
        layer(3, "ELEMENTWISE", ("h0", "m0"), ("h1",), "SUM"),  # residual add: FP32
        layer(4, "MATRIX_MULTIPLY", ("h1", "w_out"), ("actions",)),  # writes an output: FP32
        layer(5, "ELEMENTWISE", ("actions", "prev_actions"), ("diff",), "SUB"),
        layer(6, "ELEMENTWISE", ("diff", "diff"), ("sq",), "PROD"),
        layer(7, "REDUCE", ("sq",), ("mse",)),
        layer(8, "MATRIX_MULTIPLY", ("h1", "w_kv"), ("kv",)),  # a MatMul consuming FP32 data: still FP16
        layer(9, "ACTIVATION", ("kv",), ("act",)),
    ]
    pinned = fp32_layers(layers, network_inputs={"latent", "injection", "prev_actions"}, network_outputs={"actions", "mse"})
    assert sorted(pinned) == [0, 1, 3, 4, 5, 6, 7]


def halting_layers() -> list[LayerInfo]:
    """core_step_decode's statistics as TensorRT's ONNX parser imports export/head.py adjacent_statistic_tensors."""
    return [
        layer(0, "MATRIX_MULTIPLY", ("h", "w_out"), ("actions",)),  # the Coda's last projection writes the actions
        layer(1, "SHAPE", ("actions",), ("act_shape",), floats=False),
        layer(2, "SHUFFLE", ("actions", "act_shape"), ("a",)),  # flatten, its shape computed from the actions
        layer(3, "SHUFFLE", ("prev_actions", "flat_shape"), ("b",)),
        layer(4, "ELEMENTWISE", ("a", "b"), ("d",), "SUB"),
        layer(5, "ELEMENTWISE", ("d", "two"), ("d2",), "POW"),
        layer(6, "REDUCE", ("d2",), ("mean",)),
        layer(7, "SHUFFLE", ("mean", "one"), ("mse",)),  # reshape(1)
        layer(8, "ELEMENTWISE", ("a", "b"), ("ab",), "PROD"),
        layer(9, "REDUCE", ("ab",), ("dot",)),
        layer(10, "REDUCE", ("a",), ("na",)),  # ReduceL2
        layer(11, "REDUCE", ("b",), ("nb",)),
        layer(12, "ELEMENTWISE", ("na", "nb"), ("nanb",), "PROD"),
        layer(13, "ACTIVATION", ("nanb",), ("den",)),  # Clip(min=1e-8): kCLIP with alpha 1e-8
        layer(14, "ELEMENTWISE", ("dot", "den"), ("cos",), "DIV"),
        layer(15, "SHUFFLE", ("cos", "one"), ("cosine",)),
        layer(16, "SHUFFLE", ("h", "heads"), ("h_heads",)),  # not on the halting chain: free to run in FP16
        layer(17, "ACTIVATION", ("h_heads",), ("gelu",)),
    ]


def test_halting_chain_covers_shuffles_and_the_clip() -> None:
    assert halting_chain([(x.inputs, x.outputs) for x in halting_layers()]) == set(range(1, 16))


def test_whole_halting_chain_pinned_to_fp32() -> None:
    pinned = fp32_layers(halting_layers(), network_inputs={"prev_actions"}, network_outputs={"actions", "mse", "cosine"})
    assert sorted(pinned) == [0, *range(2, 16)]  # every float layer of the chain, the integer SHAPE layer excluded
    assert pinned[2] == pinned[3] == pinned[13] == "halting statistic"  # the flatten shuffles and the clip
    assert pinned[0] == "writes an FP32 network output"
    assert 16 not in pinned and 17 not in pinned


def test_graphs_without_halting_outputs_have_no_chain() -> None:
    core_step = [layer(0, "SHUFFLE", ("latent", "s"), ("x",)), layer(1, "ELEMENTWISE", ("x", "y"), ("next_latent",), "SUM")]
    assert halting_chain([(x.inputs, x.outputs) for x in core_step]) == set()
    assert fp32_layers(core_step, network_inputs={"latent"}, network_outputs={"next_latent"}) == {1: "writes an FP32 network output"}


def test_parser_error_format() -> None:
    assert format_parser_error(12, "ln_3", "LayerNormalization", "unsupported axis") == "node 12 ln_3 (LayerNormalization): unsupported axis"
    assert format_parser_error(-1, "", "", "model has no graph") == "model has no graph"


def test_failure_message_out_of_memory() -> None:
    messages = [
        "[TensorRT WARNING] Tactic Device request: 4096MB Available: 3000MB. Device memory is insufficient to use tactic.",
        "[TensorRT ERROR] 1: [defaultAllocator.cpp::allocate::20] Error Code 1: Cuda Runtime (out of memory)",
    ]
    message = build_failure_message("vlm_prelude", messages, None, "/b/engines/.fp16.partial/build.log")
    assert message.startswith("not enough GPU memory to build vlm_prelude (1: [defaultAllocator")
    assert "--workspace 1024" in message and "--graphs" in message and "/b/engines/.fp16.partial/build.log" in message


def test_failure_message_workspace_too_small() -> None:
    messages = ["[TensorRT ERROR] 10: Could not find any implementation for node /attn/MatMul due to insufficient workspace."]
    message = build_failure_message("core_step", messages, 64, "log")
    assert "--workspace 64 is too small" in message


def test_failure_message_other_error() -> None:
    messages = ["[TensorRT WARNING] something harmless", "[TensorRT ERROR] 4: [network.cpp::validate] unsupported shape"]
    assert build_failure_message("decode", messages, None, "log") == (
        "TensorRT could not build decode: 4: [network.cpp::validate] unsupported shape (full log: log)"
    )
    assert "gave no reason" in build_failure_message("decode", [], None, "log")


class FakeTimingConfig:
    """IBuilderConfig's timing-cache calls as TensorRT 10.3 binds them: create_timing_cache returns None for bytes it
    cannot read (a pointer in C++), set_timing_cache takes a reference (None is a TypeError) and says False for a
    cache from another device."""

    def __init__(self, foreign: bytes = b"") -> None:
        self.foreign = foreign
        self.attached: Optional[object] = None

    def create_timing_cache(self, data: bytes) -> Optional[object]:
        if data.startswith(b"corrupt"):
            return None
        return ("cache", data)

    def set_timing_cache(self, cache: object, ignore_mismatch: bool) -> bool:
        if cache is None:
            raise TypeError("set_timing_cache(): incompatible function arguments")
        assert ignore_mismatch is False
        self.attached = cache
        return cache != ("cache", self.foreign) if self.foreign else True


@pytest.mark.parametrize("data, foreign, why", [
    (b"corrupt bytes", b"", "is not a timing cache TensorRT can read"),
    (b"from an AGX Orin", b"from an AGX Orin", "is from another device or TensorRT"),
])
def test_an_unusable_timing_cache_falls_back_to_a_new_one_with_a_note(tmp_path: Path, data: bytes, foreign: bytes, why: str) -> None:
    path = tmp_path / "timing.cache"
    path.write_bytes(data)
    config, notes = FakeTimingConfig(foreign), []
    cache = attach_timing_cache(config, path, notes.append)
    assert cache == ("cache", b"") and config.attached == cache
    assert notes == [f"timing cache {path} {why}; starting a new one"]


def test_a_readable_timing_cache_is_used_and_a_missing_one_started_quietly(tmp_path: Path) -> None:
    path = tmp_path / "timing.cache"
    path.write_bytes(b"tactics")
    config, notes = FakeTimingConfig(), []
    assert attach_timing_cache(config, path, notes.append) == ("cache", b"tactics") == config.attached
    assert attach_timing_cache(config, tmp_path / "absent.cache", notes.append) == ("cache", b"") == config.attached
    assert attach_timing_cache(config, None, notes.append) == ("cache", b"")
    assert notes == []


def test_build_footprint_counts_the_weights_stored_in_a_graph(tmp_path: Path) -> None:
    """W + 2E from a small graph's initializers: 256 x 1024 FP32 weights (1 MiB) and an INT64 shape (32 B)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((256, 1024), np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "shape")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])], [weights, shape])
    onnx.save(helper.make_model(graph), tmp_path / "g.onnx")
    source = GraphSource("g", "g.onnx", False, False)
    fp16 = graph_footprint(tmp_path, source, "fp16", None)
    assert (fp16.weight_bytes, fp16.engine_bytes, fp16.workspace_bytes) == (2**20 + 32, 2**19 + 32, 0)
    assert fp16.peak == 2**20 + 32 + 2 * (2**19 + 32)
    fp32 = graph_footprint(tmp_path, source, "fp32", 64)
    assert fp32.engine_bytes == fp32.weight_bytes and fp32.peak == 3 * (2**20 + 32) + 64 * 2**20
    typed = graph_footprint(tmp_path, GraphSource("g", "g.onnx", False, True), "fp16", None)
    assert typed.engine_bytes == typed.weight_bytes  # a strongly typed graph is built as typed


def test_meminfo_is_read_with_its_swap() -> None:
    text = "MemTotal:       7620000 kB\nMemFree:  100 kB\nMemAvailable:   6291456 kB\nSwapFree:        1024 kB\n"
    assert parse_meminfo(text) == Memory(7620000 * 1024, 6291456 * 1024, 1024 * 1024)
    assert parse_meminfo("MemTotal:       7620000 kB\n") is None
    assert parse_meminfo("MemTotal: 1 kB\nMemAvailable: 1 kB\n").swap_free == 0  # a board without swap
