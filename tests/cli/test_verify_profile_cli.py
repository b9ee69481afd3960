"""`rdvla verify` and `rdvla profile` on the tiny bundle with ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rdvla.cli import main


def test_verify_passes_on_a_fresh_bundle(tiny_bundle: Path, capsys) -> None:
    assert main(["verify", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "all gates passed" in out and "mse_0.0001" in out and "fixed_32" in out


def test_verify_fails_when_the_backend_disagrees_with_the_reference(bundle_copy: Path, bundles, capsys) -> None:
    # Shift the stored reference of case 0 as a wrong engine would look from the other side.
    path = bundle_copy / "golden" / "case0.npz"
    case = dict(np.load(path))
    case["trace_actions"] = case["trace_actions"] + 1e-3
    np.savez_compressed(path, **case)
    bundles.edit_manifest(bundle_copy, lambda m: None, ["golden/case0.npz"])
    assert main(["verify", str(bundle_copy)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "actions max_abs 0.001" in out


def test_verify_refuses_what_the_backend_cannot_run(tiny_bundle: Path, capsys) -> None:
    assert main(["verify", str(tiny_bundle), "--precision", "fp8"]) == 2
    assert "precision" in capsys.readouterr().err
    assert main(["verify", str(tiny_bundle), "--checkpoint", "x"]) == 2
    assert "torch backend only" in capsys.readouterr().err


def test_profile_writes_report_and_plots(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "profile"
    assert main(["profile", str(tiny_bundle), "--iterations", "1,3", "--repeats", "2", "--out", str(out)]) == 0
    report = json.loads((out / "profile.json").read_text())
    assert len(report["per_iteration_ms"]["core_step"]) == 3 and len(report["per_iteration_ms"]["core_step_decode"]) == 3
    assert all(row["n"] == 2 and row["p50"] <= row["p95"] <= row["max"] for row in report["per_iteration_ms"]["core_step"])
    assert set(report["end_to_end_ms"]) == {"1", "3"} and set(report["resident_mb"]) == {"1", "3"}
    assert report["stages_ms"]["vlm_prelude"]["n"] == 4
    golden = len(json.loads((tiny_bundle / "manifest.json").read_text())["golden"])
    assert sum(report["adaptive_iterations"]["mse_0.001"].values()) == golden
    assert report["environment"]["backend"] == "onnxruntime" and "onnxruntime" in report["environment"]
    for png in ("per_iteration_latency.png", "latency_vs_iterations.png", "memory_vs_iterations.png", "adaptive_iterations.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_profile_refuses_bad_iteration_counts(tiny_bundle: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["profile", str(tiny_bundle), "--iterations", "1,x"])
    assert stopped.value.code == 2 and "argument --iterations: expected comma-separated whole numbers" in capsys.readouterr().err
