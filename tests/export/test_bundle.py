"""The bundle: parity with the reference through `rdvla predict`, graph structure, and refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from rdvla.cli import main
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError
from rdvla.runtime.policy import Policy

PROPRIO = "0.1,-0.2,0.3,0.0,0.5,-0.5,0.03,-0.03"


@pytest.fixture(scope="module")
def query_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("query")
    rng = np.random.default_rng(7)
    np.save(d / "pixels.npy", rng.standard_normal((1, 12, 224, 224)).astype(np.float32))
    np.save(d / "latent.npy", (0.6 * rng.standard_normal((1, 8, 64))).astype(np.float32))
    return {"pixels": d / "pixels.npy", "latent": d / "latent.npy", "dir": d}


def _predict(source: Path, files: dict[str, Path], stopping: list[str], name: str) -> dict[str, np.ndarray]:
    out = files["dir"] / f"{name}.npz"
    rc = main(["predict", str(source), "--pixel-values", str(files["pixels"]), "--init-latent", str(files["latent"]),
               "--instruction", "put the bowl on the plate", "--proprio", PROPRIO, "--out", str(out), *stopping])
    assert rc == 0
    return dict(np.load(out))


@pytest.mark.parametrize("stopping", [["--iterations", "1"], ["--iterations", "4"], ["--iterations", "12"], ["--iterations", "32"],
                                   ["--halting", "mse:1e-3"], ["--halting", "mse:1e-4"], ["--halting", "cosine:0.9999"]])
def test_bundle_predict_equals_checkpoint_predict(tiny_checkpoint: Path, tiny_bundle: Path, query_files, stopping) -> None:
    tag = "_".join(stopping).replace(":", "").replace("-", "")
    ref = _predict(tiny_checkpoint, query_files, stopping, f"ref{tag}")
    ours = _predict(tiny_bundle, query_files, stopping, f"ort{tag}")
    assert int(ours["iterations"]) == int(ref["iterations"])
    assert np.abs(ours["normalized_actions"] - ref["normalized_actions"]).max() <= 1e-4
    np.testing.assert_allclose(ours["deltas"], ref["deltas"], rtol=1e-3, atol=1e-7, equal_nan=True)
    if stopping[0] == "--halting":
        assert 2 <= int(ref["iterations"]) < 32  # the case exercises a real adaptive stop


def test_report_records_every_gate(tiny_bundle: Path) -> None:
    report = json.loads((tiny_bundle / "report.json").read_text())
    assert report["passed"] and not report["failures"]
    assert set(report["actions"]) == {"fixed_1", "fixed_4", "fixed_12", "fixed_32", "mse_0.001", "mse_0.0001"}
    for entry in report["actions"].values():
        assert entry["max_abs"] <= 1e-4 and entry["iteration_agreement"] == 1.0
    assert {"injection", "core0_keys", "core1_values", "coda0_keys"} <= set(report["context_outputs"])


def test_manifest_describes_the_bundle(tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    m = bundle.manifest
    raw = json.loads((tiny_bundle / "manifest.json").read_text())
    assert raw["schema"] == "rdvla.bundle" and raw["schema_version"] == 2
    assert (tiny_bundle / "manifest.sha256").read_text().split()[0] == hashlib.sha256((tiny_bundle / "manifest.json").read_bytes()).hexdigest()
    assert {"torch", "onnx", "onnxruntime"} <= set(m.tools)
    assert "model.safetensors" in m.source["files"] and len(m.source["files"]["model.safetensors"]) == 64
    assert set(m.files) >= {"tokenizer.json", "graphs/vlm_prelude.onnx", "graphs/core_step.onnx", "golden/case0.npz"}
    prelude = bundle.graph("vlm_prelude")
    ids = next(t for t in prelude.inputs if t.name == "input_ids")
    assert ids.dtype == "int64" and ids.shape == (1, "prompt_len") and bundle.prompt_len == (24, 128)
    keys = next(t for t in prelude.outputs if t.name == "core0_keys")
    assert keys.shape == (1, 8, 577, 8)
    step = bundle.graph("core_step_decode")
    assert [t.name for t in step.outputs] == ["next_latent", "actions", "mse", "cosine"]
    assert all(t.dtype == "float32" for t in step.inputs + step.outputs)
    assert m.normalization.key == "libero_spatial_no_noops"


def _weight_matmul_token_dims(path: Path) -> list[int]:
    """For every MatMul with a weight (initializer) operand: the token dim of its activation operand."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    weights = {i.name for i in model.graph.initializer}
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.input]}
    dims = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and any(i in weights for i in node.input):
            activation = next(i for i in node.input if i not in weights)
            dims.append(shapes[activation][-2])
    return dims


@pytest.mark.parametrize("graph", ["core_step", "core_step_decode", "decode"])
def test_core_graphs_project_only_the_chunk_tokens(tiny_bundle: Path, graph: str) -> None:
    dims = _weight_matmul_token_dims(tiny_bundle / "graphs" / f"{graph}.onnx")
    assert dims and set(dims) == {8}, f"weight projections over token counts {sorted(set(map(str, dims)))}"


def test_vlm_graph_projects_the_context_once(tiny_bundle: Path) -> None:
    # The context keys/values are projected here: over 65 latent+proprio tokens and 512 vision tokens.
    dims = set(_weight_matmul_token_dims(tiny_bundle / "graphs" / "vlm_prelude.onnx"))
    assert {65, 512} <= dims


def test_policy_matches_golden_cases(tiny_bundle: Path) -> None:
    from rdvla.export.bundle_writer import GoldenCase
    from rdvla.runtime.halting import AdjacentMSE, FixedIterations

    policy = Policy.load(tiny_bundle)
    case = GoldenCase.load(tiny_bundle / "golden" / "case0.npz")
    for halting in (FixedIterations(7), AdjacentMSE(1e-4)):
        result = policy.act(case.instruction, case.proprio, images=case.images, halting=halting, init_latent=case.init_latent)
        ref, k = case.reference(halting)
        assert result.iterations == k
        assert np.abs(result.normalized_actions - ref).max() <= 1e-4


def test_corrupted_file_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / "graphs" / "core_step.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="graphs/core_step.onnx does not match its SHA-256"):
        Bundle.open(bundle_copy)


def test_missing_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json listed in manifest.json is missing"):
        Bundle.open(bundle_copy)


def test_a_file_whose_listed_hash_changed_is_refused(bundle_copy: Path, bundles) -> None:
    bundles.edit_manifest(bundle_copy, lambda m: m["files"].update({"golden/case0.npz": "0" * 64}))
    with pytest.raises(BundleError, match="golden/case0.npz does not match"):
        Bundle.open(bundle_copy)


def test_a_hand_edited_manifest_is_refused(bundle_copy: Path) -> None:
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["golden/case0.npz"] = "0" * 64
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest.json does not match manifest.sha256"):
        Bundle.open(bundle_copy)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("schema", "someone.else", "unknown schema 'someone.else'"),
    ("schema_version", 99, "schema version 99 is not supported"),
])
def test_unknown_schema_is_refused(bundle_copy: Path, field: str, value, message: str, capsys) -> None:
    path = bundle_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest[field] = value
    path.write_text(json.dumps(manifest))
    (bundle_copy / "manifest.sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(BundleError, match=message):
        Bundle.open(bundle_copy)
    rc = main(["predict", str(bundle_copy), "--pixel-values", "x.npy", "--instruction", "x", "--proprio", PROPRIO])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ") and message in err[-1]


def test_prompt_outside_exported_range_is_refused(tiny_bundle: Path) -> None:
    policy = Policy.load(tiny_bundle)
    long_task = " ".join(["pick up the red block and then"] * 30)
    with pytest.raises(BundleError, match=r"the prompt is \d+ tokens; this bundle was exported for 24..128"):
        policy.act(long_task, np.zeros(8), pixel_values=np.zeros((1, 12, 224, 224), np.float32))


def test_export_refuses_existing_output_and_bad_range(tiny_checkpoint: Path, tiny_bundle: Path, capsys) -> None:
    assert main(["export", str(tiny_checkpoint), "--out", str(tiny_bundle)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(tiny_checkpoint), "--out", str(tiny_bundle) + "x", "--prompt-len", "64"]) == 2
    assert "MIN:MAX" in capsys.readouterr().err


def test_backend_options_need_a_bundle(tiny_checkpoint: Path, capsys) -> None:
    rc = main(["predict", str(tiny_checkpoint), "--backend", "onnxruntime", "--pixel-values", "x.npy",
               "--instruction", "x", "--proprio", PROPRIO])
    assert rc == 2 and "apply to bundles" in capsys.readouterr().err


def test_a_graph_output_of_unknown_rank_is_named(tmp_path: Path, bundles) -> None:
    """The manifest says (1, 8, 7); the graph declares no shape at all: refused naming both, not a TypeError."""
    root = bundles.write(tmp_path / "bundle", bundles.contract_graphs(), bundles.contract_model, (8, 64))
    graph = onnx.load(str(root / "decode.onnx"))
    actions = next(o for o in graph.graph.output if o.name == "actions")
    actions.type.tensor_type.ClearField("shape")
    onnx.save(graph, str(root / "decode.onnx"))
    bundles.edit_manifest(root, lambda m: None, new_files=["decode.onnx"])
    with pytest.raises(BundleError, match=r"outputs of decode.onnx as actions float32 \[1, 8, 7\], the graph has actions "
                                          r"float32 of unknown rank"):
        Bundle.open(root)
