"""Work and traffic computed from graph shapes: FLOPs, streamed weights, and the tables a run reads by row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rdvla.export.graph_stats import graph_stats

VOCAB, HIDDEN, OUT = 1000, 16, 8


def _graph(path: Path, table_also_multiplied: bool) -> Path:
    """ids -> Gather(table) -> MatMul(w) [-> MatMul(table^T) when the table is tied to an output head]."""
    table = numpy_helper.from_array(np.zeros((VOCAB, HIDDEN), np.float32), "table")
    weight = numpy_helper.from_array(np.zeros((HIDDEN, OUT), np.float32), "w")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="gather"),
             helper.make_node("MatMul", ["emb", "w"], ["y"], name="proj")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, OUT])]
    if table_also_multiplied:
        nodes += [helper.make_node("Transpose", ["table"], ["table_t"], name="tied"),
                  helper.make_node("MatMul", ["emb", "table_t"], ["logits"], name="head")]
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, VOCAB]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])], outputs,
                              initializer=[table, weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_an_embedding_table_read_by_row_is_not_a_streamed_weight(tmp_path: Path) -> None:
    stats = graph_stats(_graph(tmp_path / "gather.onnx", table_also_multiplied=False))
    assert stats.weight_params == HIDDEN * OUT
    assert stats.weight_bytes == 4 * HIDDEN * OUT
    assert stats.matmul_flops == 2 * 4 * HIDDEN * OUT
    assert stats.io_bytes == 4 * (4 + 4 * OUT)


def test_a_table_tied_to_a_projection_is_streamed_whole(tmp_path: Path) -> None:
    stats = graph_stats(_graph(tmp_path / "tied.onnx", table_also_multiplied=True))
    assert stats.weight_params == HIDDEN * OUT + VOCAB * HIDDEN
    assert stats.matmul_flops == 2 * 4 * HIDDEN * (OUT + VOCAB)
