"""What a finished build writes into the manifest, tested on build results made of placeholder files."""

from __future__ import annotations

import json
import types
from dataclasses import replace
from pathlib import Path

import pytest

from rdvla.runtime import contract
from rdvla.runtime.manifest import EngineEnvironment
from rdvla.runtime.backends.tensorrt.precision import BuildError
from rdvla.runtime.backends.tensorrt.build_record import EngineRecord, describe_layers, record_engines
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError, TensorSpec, read_manifest


def test_engines_section_and_file_hashes(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    section = manifest.engines["fp16"]
    assert section.environment == EngineEnvironment.from_section(kit.ORIN)
    assert section.built_at == "2026-01-01T00:00:00+00:00" and section.builder == {"precision": "fp16"}
    assert list(section.graphs) == list(contract.GRAPHS)
    record = section.graphs["core_step"]
    assert record.file == "engines/fp16/core_step.plan"
    assert record.source == "core_step.onnx" and record.source_sha256 == manifest.files["core_step.onnx"]
    for graph in contract.GRAPHS:
        rel = f"engines/fp16/{graph}.plan"
        assert manifest.files[rel] == section.graphs[graph].sha256 == kit.sha((bundle_dir / rel).read_bytes())
    # Typed end to end: the manifest read back from disk holds the same records.
    assert read_manifest(bundle_dir).engines["fp16"] == section
    assert manifest.files["engines/fp16/build.log"] == kit.sha((bundle_dir / "engines/fp16/build.log").read_bytes())
    # The bundle's own hash check now covers the engines.
    Bundle.open(bundle_dir)
    (bundle_dir / "engines/fp16/decode.plan").write_bytes(b"edited")
    with pytest.raises(BundleError, match="engines/fp16/decode.plan does not match its SHA-256"):
        Bundle.open(bundle_dir)


def record(graph: str, digest: str = "0" * 64) -> EngineRecord:
    return EngineRecord(
        graph=graph,
        file=f"engines/fp16/{graph}.plan",
        sha256=digest,
        bytes=3,
        source=f"{graph}.onnx",
        source_sha256=None,
        quantized=False,
        strongly_typed=False,
        flags=("FP16",),
        pinned_fp32_layers=0,
        build_seconds=12.34,
        io=(TensorSpec("latent", "float32", (1, 8, 32), "input"), TensorSpec("input_ids", "int64", (1, -1), "input")),
        profile={"input_ids": [[1, 8], [1, 56], [1, 64]]},
        layer_precisions={"FP16": 30, "FP32": 4, "other": 2},
    )


def test_record_json() -> None:
    data = record("vlm_prelude").to_json()
    assert data["io"][1] == {"name": "input_ids", "mode": "input", "dtype": "int64", "shape": [1, -1]}
    assert data["profile"] == {"input_ids": [[1, 8], [1, 56], [1, 64]]} and data["build_seconds"] == 12.3
    assert TensorSpec.from_json(data["io"][0]) == TensorSpec("latent", "float32", (1, 8, 32), "input")
    assert data["layer_precisions"] == {"FP16": 30, "FP32": 4, "other": 2} and data["pinned_fp32_layers"] == 0
    json.dumps(data)


def test_layer_description_for_build_and_verify(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    record = kit.add_engines(bundle_dir, "fp16").engines["fp16"].graphs["core_step_decode"]
    assert describe_layers(record) == "layers as built: 40 FP16, 12 FP32 (3 pinned to FP32)"
    assert describe_layers(replace(record, layer_precisions=None, pinned_fp32_layers=0)) == "layers as built: not recorded"


def test_partial_rebuild_keeps_the_other_graphs(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    env = EngineEnvironment.from_section(kit.ORIN)
    new = record_engines(manifest, "fp16", [record("decode", "1" * 64)], env, {}, ("engines/fp16/build.log", "2" * 64), "t", partial=True)
    graphs = new.engines["fp16"].graphs
    assert list(graphs) == list(contract.GRAPHS)
    assert graphs["decode"].sha256 == "1" * 64 == new.files["engines/fp16/decode.plan"]
    assert graphs["core_step"] == manifest.engines["fp16"].graphs["core_step"]
    assert manifest.engines["fp16"].graphs["decode"].sha256 != "1" * 64  # the input is not modified


def test_partial_rebuild_for_another_target_refused(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    other = EngineEnvironment.from_section({**kit.ORIN, "gpu_name": "NVIDIA H100"})
    with pytest.raises(BuildError, match="rebuild all graphs"):
        record_engines(manifest, "fp16", [record("decode")], other, {}, ("engines/fp16/build.log", "2" * 64), "t", partial=True)


def test_full_rebuild_replaces_the_section(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    manifest = kit.add_engines(bundle_dir, "fp32")
    env = EngineEnvironment.from_section({**kit.ORIN, "tensorrt_version": "10.7.0.23"})
    new = record_engines(manifest, "fp16", [record("core_step")], env, {}, ("engines/fp16/build.log", "2" * 64), "t")
    assert list(new.engines["fp16"].graphs) == ["core_step"]
    assert new.engines["fp16"].environment.tensorrt_version == "10.7.0.23"
    assert "engines/fp16/decode.plan" not in new.files  # no stale hash for a file the section dropped
    assert new.engines["fp32"] == manifest.engines["fp32"]
    assert "engines/fp32/decode.plan" in new.files


def test_a_saved_manifest_reads_back_and_its_digest_covers_it(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    assert read_manifest(bundle_dir).to_json() == manifest.to_json()
    assert not [p for p in bundle_dir.iterdir() if p.name.startswith(".manifest")]  # no temporary file left
    text = (bundle_dir / "manifest.json").read_text()
    (bundle_dir / "manifest.json").write_text(text.replace('"fp16"', '"fp17"', 1))
    with pytest.raises(BundleError, match="does not match manifest.sha256"):
        read_manifest(bundle_dir)
