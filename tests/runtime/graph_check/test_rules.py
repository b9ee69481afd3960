"""Every rule of the TensorRT-compatibility check fires on a small graph that breaks it, at the right node,
and on nothing else there; the one-line refusal of `require_compatible`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rdvla.runtime.graph_check.rules import RULES, IncompatibleGraphError, check_graph, require_compatible

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
          initializers: tuple[np.ndarray | onnx.TensorProto, ...] = (), opset: int = 18, names: tuple[str, ...] = ()
          ) -> onnx.ModelProto:
    inits = [t if isinstance(t, onnx.TensorProto) else numpy_helper.from_array(t, n) for t, n in zip(initializers, names)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def vi(name: str, elem_type: int, shape: tuple[int | str, ...] = (4, 4)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def trilu_bool() -> onnx.ModelProto:
    return model([helper.make_node("Trilu", ["mask", "k"], ["upper"], name="mask_triu", upper=1),
                  helper.make_node("Where", ["upper", "fill", "x"], ["y"], name="where")],
                 [vi("mask", B), vi("x", F)], [vi("y", F)],
                 (np.array(1, np.int64), np.array(-1e9, np.float32)), names=("k", "fill"))


def bool_arithmetic() -> onnx.ModelProto:
    # `blocked` has no value_info: its type comes from propagation (Greater -> BOOL)
    return model([helper.make_node("Greater", ["x", "z"], ["blocked"], name="gt"),
                  helper.make_node("Mul", ["blocked", "blocked"], ["y"], name="mul_bool")],
                 [vi("x", F), vi("z", F)], [vi("y", B)])


def opset_21() -> onnx.ModelProto:
    return model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", F)], [vi("y", F)], opset=21)


def unsupported_op() -> onnx.ModelProto:
    then = helper.make_graph([helper.make_node("Col2Im", ["x", "s", "s"], ["t"], name="inner_col2im")], "then",
                             [], [vi("t", F)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"], name="inner_identity")], "else",
                              [], [vi("e", F)])
    m = model([helper.make_node("QuickGelu", ["x"], ["g"], name="ms_gelu", domain="com.microsoft"),
               helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=other)],
              [vi("x", F), vi("c", B, ()), vi("s", I64, (2,))], [vi("g", F), vi("y", F)])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


def input_type() -> onnx.ModelProto:
    return model([helper.make_node("MatMul", ["a", "b"], ["y"], name="matmul_int")],
                 [vi("a", TensorProto.INT32), vi("b", TensorProto.INT32)], [vi("y", TensorProto.INT32)])


def constant_input() -> onnx.ModelProto:
    # Unsqueeze takes axes computed from constants alone; ReduceMean wants an initializer; neither a graph input
    return model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean_dynamic_axes"),
                  helper.make_node("Add", ["one", "zero"], ["folded"], name="axes_sum"),
                  helper.make_node("Unsqueeze", ["y", "folded"], ["z"], name="unsqueeze_folded"),
                  helper.make_node("Unsqueeze", ["z", "axes"], ["w"], name="unsqueeze_dynamic")],
                 [vi("x", F), vi("axes", I64, (1,))], [vi("w", F, ("a", "b", "c", "d"))],
                 (np.array([1], np.int64), np.array([0], np.int64)), names=("one", "zero"))


def qdq(zero_point: np.ndarray, scale: float = 0.1, scale_input: bool = False) -> onnx.ModelProto:
    inputs = [vi("x", F)] + ([vi("scale", F, ())] if scale_input else [])
    inits = (zero_point,) if scale_input else (np.array(scale, np.float32), zero_point)
    return model([helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="quantize"),
                  helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dequantize")],
                 inputs, [vi("y", F)], inits, names=("zp",) if scale_input else ("scale", "zp"))


def layernorm_outputs() -> onnx.ModelProto:
    return model([helper.make_node("LayerNormalization", ["x", "w"], ["y", "mean"], name="norm", axis=-1)],
                 [vi("x", F)], [vi("y", F), vi("mean", F, (4, 1))], (np.ones(4, np.float32),), names=("w",))


def tensor_type() -> onnx.ModelProto:
    return model([helper.make_node("Cast", ["x"], ["y"], name="cast_u16", to=TensorProto.UINT16)],
                 [vi("x", F)], [vi("y", TensorProto.UINT16)])


def uint8_inside() -> onnx.ModelProto:
    return model([helper.make_node("Cast", ["x"], ["b"], name="to_bytes", to=TensorProto.UINT8),
                  helper.make_node("Cast", ["b"], ["y"], name="back", to=TensorProto.FLOAT),
                  helper.make_node("Concat", ["b", "b"], ["z"], name="joined", axis=0)],
                 [vi("x", F)], [vi("y", F), vi("z", TensorProto.UINT8, (8, 4))])


def constant_strings() -> onnx.ModelProto:
    return model([helper.make_node("Constant", [], ["labels"], name="labels", value_strings=["a", "b"]),
                  helper.make_node("Identity", ["x"], ["y"], name="identity")],
                 [vi("x", F)], [vi("y", F)])


CASES: list[tuple[str, Callable[[], onnx.ModelProto], list[tuple[str, str]]]] = [
    ("trilu-bool", trilu_bool, [("trt-trilu-bool", "node mask_triu (Trilu)")]),
    ("bool-arithmetic", bool_arithmetic, [("trt-bool-arithmetic", "node mul_bool (Mul)")]),
    ("opset-21", opset_21, [("trt-opset", "model")]),
    ("unsupported-op", unsupported_op, [("trt-unsupported-op", "node ms_gelu (QuickGelu)"),
                                        ("trt-unsupported-op", "node inner_col2im (Col2Im)")]),
    ("input-type", input_type, [("trt-input-type", "node matmul_int (MatMul)")]),
    ("constant-input", constant_input, [("trt-constant-input", "node mean_dynamic_axes (ReduceMean)"),
                                        ("trt-constant-input", "node unsqueeze_dynamic (Unsqueeze)")]),
    ("qdq-asymmetric", lambda: qdq(np.array(3, np.int8)),
     [("trt-qdq-zero-point", "node quantize (QuantizeLinear)"), ("trt-qdq-zero-point", "node dequantize (DequantizeLinear)")]),
    ("qdq-uint8", lambda: qdq(np.array(0, np.uint8)),  # the parser also refuses DequantizeLinear of UINT8 outright
     [("trt-input-type", "node dequantize (DequantizeLinear)"), ("trt-qdq-zero-point", "node quantize (QuantizeLinear)"),
      ("trt-qdq-zero-point", "node dequantize (DequantizeLinear)")]),
    ("qdq-negative-scale", lambda: qdq(np.array(0, np.int8), scale=-0.1),
     [("trt-qdq-scale", "node quantize (QuantizeLinear)"), ("trt-qdq-scale", "node dequantize (DequantizeLinear)")]),
    ("qdq-computed-scale", lambda: qdq(np.array(0, np.int8), scale_input=True),
     [("trt-qdq-scale", "node quantize (QuantizeLinear)"), ("trt-qdq-scale", "node dequantize (DequantizeLinear)")]),
    ("layernorm-outputs", layernorm_outputs, [("trt-layernorm-outputs", "node norm (LayerNormalization)")]),
    ("tensor-type", tensor_type, [("trt-tensor-type", "node cast_u16 (Cast)")]),
    ("uint8-inside", uint8_inside, [("trt-input-type", "node joined (Concat)"), ("trt-tensor-type", "node to_bytes (Cast)")]),
    ("constant-attribute", constant_strings, [("trt-tensor-type", "node labels (Constant)"),
                                              ("trt-constant-attribute", "node labels (Constant)")]),
]


@pytest.fixture
def save(tmp_path: Path) -> Callable[[onnx.ModelProto, str], Path]:
    def write(m: onnx.ModelProto, name: str) -> Path:
        path = tmp_path / f"{name}.onnx"
        onnx.save(m, str(path))
        return path

    return write


@pytest.mark.parametrize(("name", "build", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_fires_at_the_node_that_breaks_it(save, name, build, expected) -> None:
    path = save(build(), name)
    found = [(v.rule, v.where) for v in check_graph(path)]
    assert found == expected


def test_every_rule_has_a_breaking_graph_and_its_facts() -> None:
    ids = [rule.id for rule in RULES]
    assert len(set(ids)) == len(ids)
    assert set(ids) == {rule for _, _, expected in CASES for rule, _ in expected}
    for rule in RULES:
        assert rule.construct and rule.affects and rule.source and rule.fix, rule.id
        assert "onnx-tensorrt" in rule.source or "TensorRT" in rule.source, rule.id


def test_the_fixed_constructs_pass(save) -> None:
    """What each fix describes is accepted: a float Trilu, arithmetic after a Cast, symmetric INT8 Q/DQ (its scale
    an initializer or computed from constants)."""
    float_trilu = model([helper.make_node("Trilu", ["x"], ["y"], name="t", upper=1)], [vi("x", F)], [vi("y", F)])
    cast_first = model([helper.make_node("Greater", ["x", "z"], ["b"], name="gt"),
                        helper.make_node("Cast", ["b"], ["f"], name="cast", to=F),
                        helper.make_node("Mul", ["f", "x"], ["y"], name="mul")],
                       [vi("x", F), vi("z", F)], [vi("y", F)])
    folded_scale = qdq(np.array(0, np.int8), scale=0.5)
    folded_scale.graph.node.insert(0, helper.make_node("Mul", ["half_scale", "two"], ["scale"], name="scale_of_constants"))
    folded_scale.graph.initializer[0].name = "half_scale"
    folded_scale.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    for i, m in enumerate((float_trilu, cast_first, qdq(np.array(0, np.int8), scale=0.5), folded_scale)):
        assert check_graph(save(m, f"ok{i}")) == []


def test_a_violation_reads_as_one_line_naming_graph_node_rule_and_fix(save) -> None:
    path = save(trilu_bool(), "mask")
    (violation,) = check_graph(path)
    line = str(violation)
    assert line == (f"graph {path}: node mask_triu (Trilu): trt-trilu-bool: Trilu of the BOOL tensor 'mask'; "
                    "build the mask by comparing two index ranges (Range, Unsqueeze, Less/Greater on INT64) feeding Where")
    assert "\n" not in line


def test_require_compatible_raises_the_first_violation_in_one_line(save, caplog) -> None:
    good = save(model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", F)], [vi("y", F)]), "good")
    bad = save(qdq(np.array(3, np.int8)), "bad")
    require_compatible([good])
    with pytest.raises(IncompatibleGraphError) as info:
        require_compatible([good, bad])
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"graph {bad}: node quantize (QuantizeLinear): trt-qdq-zero-point: ")
    assert message.endswith("(and 1 more, logged)") and "\n" not in message
    assert sum("trt-qdq-zero-point" in r.getMessage() for r in caplog.records) == 2


def test_a_file_that_is_not_onnx_is_refused_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError) as info:
        check_graph(junk)
    assert str(junk) in str(info.value) and "\n" not in str(info.value)
    empty = tmp_path / "empty.onnx"
    empty.touch()
    with pytest.raises(ValueError, match="empty"):
        check_graph(empty)


def test_require_compatible_names_graphs_relative_to_a_root(save) -> None:
    """`rdvla export` checks graphs in a scratch folder: its errors name them as the bundle will hold them."""
    bad = save(qdq(np.array(3, np.int8)), "bad")
    with pytest.raises(IncompatibleGraphError) as info:
        require_compatible([bad], root=bad.parent.parent)
    assert str(info.value).startswith(f"graph {bad.parent.name}/{bad.name}: node quantize (QuantizeLinear): ")
    junk = bad.parent / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError) as read:
        require_compatible([junk], root=junk.parent)
    assert str(read.value).startswith("graph junk.onnx: ") and str(junk.parent) not in str(read.value)
