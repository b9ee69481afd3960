"""`rdvla export` writes graphs TensorRT 10.3's ONNX parser takes, and refuses, in one line, one it would not."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
import torch

from rdvla.cli import main
from rdvla.export import vlm
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.graph_check.rules import check_graph

pytestmark = pytest.mark.timeout(600)


def test_exported_graphs_pass_the_check(tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    for spec in bundle.graphs.values():
        assert check_graph(bundle.path(spec.file)) == [], spec.file
    prelude = onnx.load(str(bundle.path(bundle.graph("vlm_prelude").file)), load_external_data=False).graph
    ops = {n.op_type for n in prelude.node}
    assert "Trilu" not in ops
    producers = {o: n for n in prelude.node for o in n.output}
    (where,) = [n for n in prelude.node if n.op_type == "Where"]
    assert producers[where.input[0]].op_type == "Greater"  # the causal mask: two index ranges compared


def triu_mask(length: int, dtype: torch.dtype) -> torch.Tensor:
    """The mask as it was exported before: `triu` of a BOOL tensor (a Trilu node on BOOL)."""
    blocked = torch.ones(length, length, dtype=torch.bool).triu(1)
    return torch.zeros(length, length, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)[None, None]


def test_triu_mask_is_the_same_mask() -> None:
    for length in (1, 2, 7, 130):
        assert torch.equal(vlm.causal_mask(length, torch.float32), triu_mask(length, torch.float32))


def test_export_refuses_a_bool_trilu_in_one_line(tiny_checkpoint: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(vlm, "causal_mask", triu_mask)
    out = tmp_path / "bundle"
    assert main(["export", str(tiny_checkpoint), "--out", str(out), "--cases", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert re.match(r"error: graph graphs/vlm_prelude\.onnx: node \S+ \(Trilu\): trt-trilu-bool: Trilu of the BOOL tensor ", err), err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # stopped before parity, its work removed
