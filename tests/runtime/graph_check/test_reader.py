"""The pure-Python ONNX reader agrees with the onnx package, skips weights without reading them, and
runs where onnx is not installed (the robot, where `rdvla build` checks graphs)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rdvla.runtime.graph_check.onnx_reader import (
    SMALL_TENSOR_BYTES, Graph, Tensor, TensorIO, graph_files, graph_io, read_model, tensor_types,
)

GRAPHS = ("vlm_prelude", "core_step", "core_step_decode", "decode")


def _shape(v: onnx.ValueInfoProto) -> tuple[int | str | None, ...] | None:
    t = v.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                 for d in t.shape.dim)


def assert_same_structure(path: Path) -> None:
    ours = read_model(path)
    theirs = onnx.load(str(path), load_external_data=False)
    assert ours.ir_version == theirs.ir_version
    assert ours.opset_imports == {o.domain: o.version for o in theirs.opset_import}
    g, ref = ours.graph, theirs.graph
    assert len(g.nodes) == len(ref.node)
    assert [(n.name, n.op_type, n.domain, n.inputs, n.outputs) for n in g.nodes] == [
        (n.name, n.op_type, n.domain, tuple(n.input), tuple(n.output)) for n in ref.node]
    assert [(t.name, t.data_type, t.dims) for t in g.initializers.values()] == [
        (t.name, t.data_type, tuple(t.dims)) for t in ref.initializer]
    for mine, their in ((g.inputs, ref.input), (g.outputs, ref.output), (g.value_info, ref.value_info)):
        assert [(v.name, v.elem_type, v.shape) for v in mine] == [
            (v.name, v.type.tensor_type.elem_type, _shape(v)) for v in their]


@pytest.mark.parametrize("graph", GRAPHS)
def test_reader_agrees_with_onnx_on_the_tiny_bundle(tiny_bundle: Path, graph: str) -> None:
    path = tiny_bundle / "graphs" / f"{graph}.onnx"
    assert_same_structure(path)
    ours = read_model(path).graph
    theirs = onnx.load(str(path)).graph
    kept = 0
    for init in theirs.initializer:
        values = ours.initializers[init.name].array()
        if values is not None:
            kept += 1
            expected = numpy_helper.to_array(init)
            assert values.dtype == expected.dtype and np.array_equal(values, expected), init.name
        else:
            assert init.raw_data and len(init.raw_data) > SMALL_TENSOR_BYTES, init.name
    assert kept > 0
    # every node output gets a type, and the one onnx's shape inference gives it
    types = tensor_types(ours)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False)).graph
    expected_types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.value_info, *inferred.output)}
    outputs = [o for n in theirs.node for o in n.output if o]
    assert all(types[o] == expected_types[o] for o in outputs if o in expected_types)
    assert all(types.get(o, 0) != 0 for o in outputs)


def test_reader_reads_external_data_graphs_without_the_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((256, 512)).astype(np.float32)  # 512 KiB: external
    small = np.arange(6, dtype=np.int64)  # 48 bytes: stays inline
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
         helper.make_node("Reshape", ["h", "shape"], ["y"], name="reshape")],
        "external", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (3, 256))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(big, "w"), numpy_helper.from_array(np.array([3, 512], np.int64), "shape"),
                     numpy_helper.from_array(small, "unused")],
    )
    path = tmp_path / "external.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path),
              save_as_external_data=True, location="external.onnx.data", size_threshold=1024)
    assert (tmp_path / "external.onnx.data").stat().st_size >= big.nbytes
    assert_same_structure(path)
    ours = read_model(path).graph
    assert ours.initializers["w"].external and ours.initializers["w"].array() is None
    assert ours.initializers["w"].location == "external.onnx.data"
    assert not ours.initializers["unused"].external and np.array_equal(ours.initializers["unused"].array(), small)
    assert ours.initializers["unused"].location is None
    assert tensor_types(ours)["y"] == TensorProto.FLOAT
    assert graph_files(path) == [path, tmp_path / "external.onnx.data"]


def test_graph_files_names_every_external_data_file_subgraphs_and_attributes_included(tmp_path: Path) -> None:
    """What onnx would load: initializers and tensor attributes, in subgraphs too, each file once."""
    rng = np.random.default_rng(0)
    big = {name: rng.standard_normal((64, 64)).astype(np.float32) for name in ("w", "inner_w", "inner_c")}
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], name="c", value=numpy_helper.from_array(big["inner_c"], "inner_c")),
         helper.make_node("Add", ["inner_w", "c"], ["t"], name="add")],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, (64, 64))],
        initializer=[numpy_helper.from_array(big["inner_w"], "inner_w")])
    other = helper.make_graph([helper.make_node("Identity", ["w"], ["e"], name="same")], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, (64, 64))])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then, else_branch=other)], "nested",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, ())],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (64, 64))],
        initializer=[numpy_helper.from_array(big["w"], "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=False, size_threshold=1024,
                                                             convert_attribute=True)
    path = tmp_path / "nested.onnx"
    onnx.save(model, str(path))
    expected = sorted(p.name for p in tmp_path.iterdir() if p != path)
    assert len(expected) == 3
    assert graph_files(path) == [path, *(tmp_path / name for name in expected)]
    assert graph_files(tmp_path / "nested.onnx") == graph_files(str(path))


def test_graph_io_describes_inputs_and_outputs_as_the_manifest_does(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["same"], name="same"), helper.make_node("Not", ["mask"], ["flipped"], name="not"),
         helper.make_node("Cast", ["ids"], ["half"], name="cast", to=TensorProto.FLOAT16)],
        "io", [helper.make_tensor_value_info("ids", TensorProto.INT64, (1, "prompt_len")),
               helper.make_tensor_value_info("mask", TensorProto.BOOL, (2, None))],
        [helper.make_tensor_value_info("same", TensorProto.INT64, (1, "prompt_len")),
         helper.make_tensor_value_info("flipped", TensorProto.BOOL, None),
         helper.make_tensor_value_info("half", TensorProto.FLOAT16, (1, "prompt_len"))],
    )
    path = tmp_path / "io.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    inputs, outputs = graph_io(path)
    assert inputs == (TensorIO("ids", "int64", (1, "prompt_len")), TensorIO("mask", "bool", (2, None)))
    assert outputs == (("same", "int64", (1, "prompt_len")), ("flipped", "bool", None), ("half", "float16", (1, "prompt_len")))


def test_inline_weights_are_skipped_not_copied(tmp_path: Path) -> None:
    """A 64 MB single-file graph is read with well under 1 MB of Python memory: the weights are mapped, never copied."""
    weights = np.ones((4096, 4096), np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")], "inline",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4096))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4096))],
                              initializer=[numpy_helper.from_array(weights, "w")])
    path = tmp_path / "inline.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    del weights, graph
    assert path.stat().st_size > 64e6
    tracemalloc.start()
    try:
        model = read_model(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.graph.initializers["w"].dims == (4096, 4096) and model.graph.initializers["w"].array() is None
    assert peak < 1_000_000, peak


def test_every_attribute_kind_decodes_as_onnx_reads_it(tmp_path: Path) -> None:
    body = helper.make_graph([helper.make_node("Neg", ["a"], ["b"], name="inner")], "body", [], [])
    tensor = numpy_helper.from_array(np.array([[1.5, -2.0]], np.float16), "t")
    node = helper.make_node(
        "Everything", ["x"], ["y"], name="kinds", domain="test.kinds",
        f=0.25, i=-7, s="text", t=tensor, g=body, floats=[1.0, -0.5], ints=[-1, 0, 2**40], strings=["p", "q"],
        tensors=[numpy_helper.from_array(np.array([True, False]), "m")], graphs=[body, body], zero=0,
    )
    graph = helper.make_graph([node], "attrs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2,))])
    path = tmp_path / "attrs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("test.kinds", 1)]),
              str(path))
    (ours,) = read_model(path).graph.nodes
    for attr in onnx.load(str(path)).graph.node[0].attribute:
        expected = helper.get_attribute_value(attr)
        got = ours.attributes[attr.name]
        if attr.type == onnx.AttributeProto.TENSOR:
            assert isinstance(got, Tensor) and np.array_equal(got.array(), numpy_helper.to_array(expected))
        elif attr.type == onnx.AttributeProto.TENSORS:
            assert [t.array().tolist() for t in got] == [numpy_helper.to_array(t).tolist() for t in expected]
        elif attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            graphs = got if isinstance(got, tuple) else (got,)
            assert all(isinstance(sub, Graph) and [n.name for n in sub.nodes] == ["inner"] for sub in graphs)
        elif attr.type == onnx.AttributeProto.STRING:
            assert got == expected.decode()
        elif attr.type == onnx.AttributeProto.STRINGS:
            assert got == tuple(v.decode() for v in expected)
        elif attr.type in (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS):
            assert got == tuple(expected)
        else:
            assert got == expected, attr.name
    assert [n.name for n in read_model(path).graph.walk()] == ["kinds", "inner", "inner", "inner"]


def test_types_come_from_initializers_then_value_info_then_propagation(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Custom", ["x"], ["recorded"], name="custom", domain="test"),
        helper.make_node("Less", ["x", "w"], ["less"], name="less"),
        helper.make_node("Where", ["less", "w", "x"], ["picked"], name="where"),
        helper.make_node("Cast", ["picked"], ["half"], name="cast", to=TensorProto.FLOAT16),
        helper.make_node("Constant", [], ["k"], name="k", value_int=3),
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
    ]
    graph = helper.make_graph(
        nodes, "types", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,))],
        [helper.make_tensor_value_info("half", TensorProto.FLOAT16, (2,))],
        initializer=[numpy_helper.from_array(np.ones(2, np.float32), "w"), numpy_helper.from_array(np.float32(0.1), "scale"),
                     numpy_helper.from_array(np.int8(0), "zp")],
        # a converter's stale entry for an initializer, and the only source for the custom op's output
        value_info=[helper.make_tensor_value_info("w", TensorProto.FLOAT16, (2,)),
                    helper.make_tensor_value_info("recorded", TensorProto.INT32, (2,))],
    )
    path = tmp_path / "types.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    types = tensor_types(read_model(path).graph)
    assert types == {"x": TensorProto.FLOAT, "w": TensorProto.FLOAT, "scale": TensorProto.FLOAT, "zp": TensorProto.INT8,
                     "recorded": TensorProto.INT32, "less": TensorProto.BOOL, "picked": TensorProto.FLOAT,
                     "half": TensorProto.FLOAT16, "k": TensorProto.INT64, "q": TensorProto.INT8, "shape": TensorProto.INT64}


def test_the_check_runs_with_onnx_absent(tiny_bundle: Path, tmp_path: Path) -> None:
    """The robot install has no onnx: `rdvla build`'s check reads the graphs without it."""
    bad = tmp_path / "trilu.onnx"
    graph = helper.make_graph([helper.make_node("Trilu", ["m"], ["u"], name="mask_triu", upper=1)], "g",
                              [helper.make_tensor_value_info("m", TensorProto.BOOL, (4, 4))],
                              [helper.make_tensor_value_info("u", TensorProto.BOOL, (4, 4))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(bad))
    code = (
        "import sys\n"
        "for name in ('onnx', 'onnxruntime', 'torch', 'transformers', 'onnxscript'): sys.modules[name] = None\n"
        "from rdvla.runtime.graph_check.rules import check_graph, require_compatible\n"
        f"require_compatible(sorted(__import__('pathlib').Path({str(tiny_bundle / 'graphs')!r}).glob('*.onnx')))\n"
        f"print(*check_graph({str(bad)!r}), sep='\\n')\n"
        "assert 'onnx' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"graph {bad}: node mask_triu (Trilu): trt-trilu-bool: Trilu of the BOOL tensor 'm'; build the mask by comparing "
        "two index ranges (Range, Unsqueeze, Less/Greater on INT64) feeding Where"
    ]
