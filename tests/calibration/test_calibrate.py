"""`rdvla calibrate` on the tiny bundle: Q/DQ and FP16 graphs, the data set, the report, and `rdvla verify` on them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rdvla.calibration.data import CalibrationSet, fingerprint
from rdvla.runtime import contract
from rdvla.runtime.backends.onnxruntime import OnnxRuntimeBackend
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError
from rdvla.runtime.gates import calibration_gate_for, gate_for
from rdvla.runtime.golden import TRACE_ITERATIONS, load_cases
from rdvla.runtime.halting import AdjacentMSE, CosineSimilarity
from rdvla.runtime.policy import Policy, halting_below_floor
from rdvla.runtime.verify import gate_failures, verify_actions

from .conftest import INSTRUCTION

# A hang guard for each test's own work (func_only): the session's tiny bundle, built by whichever test needs
# it first, takes minutes on a shared 2-core machine and is no test's hang.
pytestmark = pytest.mark.timeout(300, func_only=True)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def test_calibrate_publishes_verified_graphs_and_fingerprint(calibrated: dict[str, Any]) -> None:
    assert calibrated["status"] == 0, calibrated["stdout"]
    bundle = Bundle.open(calibrated["bundle"])  # every new file is listed with its hash
    manifest = calibrated["manifest"]
    for section in ("graphs_int8", "graphs_fp16"):
        assert set(manifest[section]) == set(contract.GRAPHS)
        for graph, entry in manifest[section].items():
            assert entry["file"] in manifest["files"] and entry["file"] != manifest["graphs"][graph]["file"]
            assert entry["inputs"] == manifest["graphs"][graph]["inputs"]
    assert all(entry["strongly_typed"] is True and entry["fp32_nodes"] for entry in manifest["graphs_fp16"].values())
    record = manifest["calibration"]["int8"]
    data_dir = bundle.path(record["data"]["dir"])
    files = {name: manifest["files"][f"{record['data']['dir']}/{name}"] for name in record["data"]["files"]}
    dataset = CalibrationSet.load(data_dir)
    assert record["data"]["fingerprint"] == fingerprint(files, dataset.meta)
    assert record["quantizer"] == "ort" and record["method"] == "minmax"
    assert record["data"]["sources"][0]["proprio"].startswith("dataset q01..q99 midpoint")
    assert "accuracy report" in calibrated["stdout"] and "all accuracy gates passed" in calibrated["stdout"]


def test_qdq_sits_only_on_weight_matmuls(calibrated: dict[str, Any]) -> None:
    manifest = calibrated["manifest"]
    for graph in (contract.CORE_STEP, contract.VLM_PRELUDE):
        model = onnx.load(str(calibrated["bundle"] / manifest["graphs_int8"][graph]["file"]))
        initializers = {i.name: i for i in model.graph.initializer}
        consumers, producers = _consumers(model), _producers(model)
        dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
        assert dq
        for node in dq:
            users = consumers[node.output[0]]
            # Norms, softmax, residual additions and attention products get no Q/DQ.
            assert {u.op_type for u in users} <= {"MatMul", "Gemm"}, (node.name, [u.op_type for u in users])
            for user in users:
                assert user.input[1] in {d.output[0] for d in dq} and producers[user.input[1]].input[0] in initializers
            zero = onnx.numpy_helper.to_array(initializers[node.input[2]])
            assert not zero.any()  # symmetric: TensorRT takes zero points of 0 only
        weights = [n for n in dq if n.input[0] in initializers]
        for node in weights:
            q = initializers[node.input[0]]
            assert q.data_type == onnx.TensorProto.INT8
            user = consumers[node.output[0]][0]
            transposed = any(a.name == "transB" and a.i for a in user.attribute)
            out_axis = 0 if transposed else 1  # per output channel: [K, N] MatMul weights, [N, K] Gemm transB weights
            scale = initializers[node.input[1]]
            assert list(scale.dims) == [q.dims[out_axis]] and {a.name: a.i for a in node.attribute}["axis"] == out_axis
        # The 7-wide action projection stays in FP32 (too small for INT8 kernels, straight onto the actions).
        small = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in initializers]
        assert all(min(initializers[n.input[1]].dims) < 16 for n in small)


def test_fp16_graph_keeps_norms_and_residual_stream_in_fp32(calibrated: dict[str, Any]) -> None:
    path = calibrated["bundle"] / calibrated["manifest"]["graphs_fp16"][contract.CORE_STEP]["file"]
    model = onnx.load(str(path))
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(bare)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert all(types[v.name] == f32 for v in [*model.graph.input, *model.graph.output])
    ops = {}
    for node in model.graph.node:
        ops.setdefault(node.op_type, set()).add(types.get(node.output[0]))
    assert ops["Pow"] == {f32} and ops["ReduceMean"] == {f32} and ops["Softmax"] == {f32}
    assert f16 in ops["MatMul"]
    # Weight products in FP16: their weights are stored in FP16.
    assert any(i.data_type == f16 and len(i.dims) == 2 for i in model.graph.initializer)
    # FP32 regions are joined directly, never squeezed through an FP16 cast between two FP32 nodes.
    producers = _producers(model)
    for node in model.graph.node:
        if node.op_type == "Cast" and node.attribute[0].i == f32:
            first = producers.get(node.input[0])
            assert not (first is not None and first.op_type == "Cast" and types.get(first.input[0]) == f32), node.name


def test_capture_keeps_each_graphs_inputs_at_iterations_1_to_32(calibrated: dict[str, Any]) -> None:
    bundle = Bundle.open(calibrated["bundle"])
    record = calibrated["manifest"]["calibration"]["int8"]["data"]
    dataset = CalibrationSet.load(bundle.path(record["dir"]))
    assert dataset.meta["iterations"] == list(range(1, TRACE_ITERATIONS + 1)) == record["iterations"]
    assert record["samples"] == {contract.VLM_PRELUDE: 6, contract.CORE_STEP: 48, contract.CORE_STEP_DECODE: 48, contract.DECODE: 48}
    for graph in contract.GRAPHS:
        assert sorted(dataset.inputs[graph]) == sorted(t.name for t in bundle.graph(graph).inputs)
    # A kept state really is the state entering iteration k of that query: one FP32 step from it
    # decodes to the k-th action chunk of the query's FP32 trace.
    session = ort.InferenceSession(str(bundle.path(bundle.graph(contract.CORE_STEP_DECODE).file)), providers=["CPUExecutionProvider"])
    origins = dataset.meta["origin"][contract.CORE_STEP_DECODE]
    for i, feed in enumerate(dataset.samples(contract.CORE_STEP_DECODE)):
        q, k = origins[i]
        actions = session.run([contract.ACTIONS], feed)[0][0]
        np.testing.assert_allclose(actions, dataset.queries["trace_actions"][q, k - 1], atol=1e-5)
        if k == 1:  # S0: truncated normal noise, no previous decode
            assert not feed[contract.PREV_ACTIONS].any()
            assert np.abs(feed[contract.LATENT]).max() <= 3 * bundle.dims.init_sigma + 1e-6


def test_report_gives_error_per_iteration_and_iteration_drift(calibrated: dict[str, Any]) -> None:
    report = calibrated["report"]
    assert report["queries"] == 6 and report["passed"]
    assert sum(report["fp32"]["iterations"]["histogram"].values()) == 6
    statistic = report["fp32"]["median_deltas"]
    assert len(statistic) == TRACE_ITERATIONS and statistic[0] is None
    assert statistic[-1] < statistic[1]  # consecutive actions converge over the iterations
    for precision in ("int8", "fp16"):
        section = report[precision]
        gate = calibration_gate_for(precision)
        per_k = np.array(section["per_iteration"]["max_abs"])
        assert per_k.shape == (TRACE_ITERATIONS,) and np.isfinite(per_k).all()
        assert 0 < per_k.max() <= gate.actions_max_abs  # lower precision changes the actions, within the gate
        assert (np.array(section["per_iteration"]["mean_abs"]) <= per_k).all()
        it = section["iterations"]
        assert len(it["stops"]) == len(it["drift"]) == 6 and sum(it["histogram"].values()) == 6
        assert it["drift"] == [a - b for a, b in zip(it["stops"], report["fp32"]["iterations"]["stops"])]
        assert it["mean_abs_drift"] <= gate.mean_abs_drift
        sweep = section["iterations_by_threshold"]
        default = f"{report['halting']['threshold']:g}"
        assert sweep[default]["stops"] == it["stops"] and len(sweep) == 4
        assert len(section["median_deltas"]) == TRACE_ITERATIONS and all(v > 0 for v in section["median_deltas"][1:])
        medians = [row["fp32_median_stop"] for row in sweep.values()]  # loosest threshold first
        assert medians == sorted(medians) and medians[0] < medians[-1]  # a tighter threshold stops later
        assert set(section["graphs"]) == set(contract.GRAPHS)
        assert all(e["nonfinite"] == 0 for outputs in section["graphs"].values() for e in outputs.values())
    # INT8 is the coarser of the two.
    assert max(report["int8"]["per_iteration"]["max_abs"]) > max(report["fp16"]["per_iteration"]["max_abs"])


def test_int8_and_fp16_pass_their_gates_on_the_golden_cases(calibrated: dict[str, Any], cli: Callable[[list[str]], int],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bundle = Bundle.open(calibrated["bundle"])
    cases = load_cases(bundle)
    for precision in ("int8", "fp16"):
        policy = Policy(bundle, OnnxRuntimeBackend(bundle, precision))
        results = verify_actions(policy, cases)
        assert not gate_failures(results, gate_for(precision))
        worst = max(r.max_abs for r in results.values())
        assert worst > gate_for("fp32").actions_max_abs  # really the lower-precision graphs, not the FP32 ones
    assert cli(["verify", str(calibrated["bundle"]), "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert "actions vs FP32 by iteration" in out and "drift vs FP32" in out and "drift by MSE threshold" in out
    assert "int8 consecutive-action MSE" in out
    assert "all gates passed" in out


def test_backend_refuses_a_precision_the_bundle_lacks(tiny_bundle: Path) -> None:
    bundle = Bundle.open(tiny_bundle)
    with pytest.raises(BundleError, match="rdvla calibrate"):
        OnnxRuntimeBackend(bundle, "int8")
    with pytest.raises(BundleError, match="runs precision"):
        OnnxRuntimeBackend(bundle, "fp8")


def test_recalibrating_one_precision_keeps_the_other_and_cleans_up(calibrated: dict[str, Any], tmp_path: Path,
                                                                   recordings: Path, cli: Callable[[list[str]], int]) -> None:
    import shutil

    root = Path(shutil.copytree(calibrated["bundle"], tmp_path / "bundle"))
    before = json.loads((root / "manifest.json").read_text())
    stale = root / "graphs" / ".rdvla-probe-killed.onnx"  # what a run killed mid-probe leaves behind
    stale.write_bytes(b"")
    assert cli(["calibrate", str(root), "--data", str(recordings), "--instruction", INSTRUCTION, "--precision", "fp16",
                "--queries", "2", "--graphs", "core_step,decode"]) == 0
    after = json.loads((root / "manifest.json").read_text())
    assert after["graphs_int8"] == before["graphs_int8"]
    assert after["calibration"]["int8"] == before["calibration"]["int8"]
    assert set(after["graphs_fp16"]) == {contract.CORE_STEP, contract.DECODE}
    assert after["calibration"]["fp16"]["run"] != before["calibration"]["fp16"]["run"]
    Bundle.open(root)
    on_disk = {str(p.relative_to(root)) for p in (root / "calibration").rglob("*") if p.is_file()}
    assert on_disk == {f for f in after["files"] if f.startswith("calibration/")}  # nothing unlisted left behind
    assert not (root / before["graphs_fp16"][contract.VLM_PRELUDE]["file"]).exists() and not stale.exists()
    assert (root / before["graphs_int8"][contract.VLM_PRELUDE]["file"]).exists()


def test_policy_warns_once_when_its_mse_threshold_is_below_the_precisions_floor(
        calibrated: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    floor = calibrated["report"]["int8"]["median_deltas"][-1]
    policy = Policy.load(calibrated["bundle"], precision="int8")
    try:
        bundle = policy.bundle
        assert halting_below_floor(bundle, "int8", AdjacentMSE(floor * 10)) is None
        assert halting_below_floor(bundle, "fp32", AdjacentMSE(floor / 10)) is None  # FP32 is what the floors are measured against
        assert halting_below_floor(bundle, "int8", CosineSimilarity(0.999)) is None
        tight = AdjacentMSE(floor / 10, max_iterations=6)
        assert "choose a threshold above" in (halting_below_floor(bundle, "int8", tight) or "")
        pixels = np.zeros((1, 6 * bundle.dims.num_images, 224, 224), np.float32)
        with caplog.at_level("WARNING", logger="rdvla.runtime.policy"):
            for _ in range(2):
                policy.act(INSTRUCTION, np.zeros(8), pixel_values=pixels, halting=tight, seed=0)
        warnings = [r for r in caplog.records if "levels off" in r.getMessage()]
        assert len(warnings) == 1 and "6 iterations" in warnings[0].getMessage()
    finally:
        policy.close()
