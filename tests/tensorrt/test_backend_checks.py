"""The TensorRT backend's refusals: missing libraries, engines for another target, corrupted or stale files.

The constructor tests use stand-in modules that only report a TensorRT version and a GPU identity;
every case here is refused before an engine would be deserialised, and the stand-in Runtime fails
the test if it is reached.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest

from rdvla.runtime.backends import base as names
from rdvla.runtime.backends import load_backend
from rdvla.runtime.backends.tensorrt import (
    EngineEnvironment,
    IOTensor,
    TensorRTBackend,
    TensorRTUnavailable,
    check_engine_compat,
    check_engine_io,
    check_engine_sources,
    engine_section,
    numpy_dtype_name,
    parse_l4t_release,
    require_pycuda,
    verify_engine_files,
)
from rdvla.runtime.bundle import Bundle, BundleError

ROOT = Path("/robot/bundle")


def env(**changes: object) -> EngineEnvironment:
    base = {"tensorrt_version": "10.3.0.30", "cuda_version": "12.6", "gpu_name": "Orin", "compute_capability": "8.7", "sm_count": 16}
    return EngineEnvironment.from_section({**base, **changes})


def test_missing_engines_section(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    with pytest.raises(BundleError, match=r"no fp16 TensorRT engines in this bundle: run `rdvla build .* --precision fp16` on this device"):
        engine_section(manifest, "fp16", bundle_dir)


def test_other_precision_only(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp32")
    with pytest.raises(BundleError, match=r"no int8 TensorRT engines in this bundle \(it has fp32\)"):
        engine_section(manifest, "int8", bundle_dir)


def test_partial_section(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    del manifest["engines"]["fp16"]["graphs"]["core_step_decode"]
    with pytest.raises(BundleError, match="lack core_step_decode"):
        engine_section(manifest, "fp16", bundle_dir)


def test_same_target_accepted() -> None:
    check_engine_compat(env().to_json(), env(l4t_release="R36.4.3"), "fp16", ROOT)


@pytest.mark.parametrize(
    "built, expected",
    [
        ({"tensorrt_version": "10.2.0.19"}, "TensorRT 10.2.0.19 (this device runs 10.3.0.30)"),
        ({"tensorrt_version": "8.6.2.3"}, "TensorRT 8.6.2.3"),
        ({"compute_capability": "9.0", "gpu_name": "NVIDIA H100 80GB HBM3", "sm_count": 132}, "compute capability 9.0 (this GPU is 8.7)"),
        ({"sm_count": 8}, "GPU Orin with 8 SMs (this GPU: Orin with 16 SMs)"),  # Orin NX engines on an AGX Orin
    ],
)
def test_other_target_refused(built: dict[str, object], expected: str) -> None:
    with pytest.raises(BundleError) as info:
        check_engine_compat(env(**built).to_json(), env(), "fp16", ROOT)
    message = str(info.value)
    assert expected in message
    assert "run `rdvla build /robot/bundle --precision fp16` on this device" in message


def test_cuda_difference_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_engine_compat(env(cuda_version="12.2").to_json(), env(), "fp16", ROOT)
    assert "built under CUDA 12.2" in caplog.text


def test_malformed_section() -> None:
    with pytest.raises(BundleError, match="malformed engines section"):
        check_engine_compat({"tensorrt_version": "10.3"}, env(), "fp16", ROOT)


def test_engine_sha_mismatch(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    kit.add_engines(bundle_dir, "fp16")
    bundle = Bundle.open(bundle_dir)
    section = engine_section(bundle.manifest, "fp16", bundle_dir)
    assert set(verify_engine_files(bundle, section, "fp16")) == set(names.GRAPHS)
    (bundle_dir / "engines/fp16/core_step.plan").write_bytes(b"flipped bits")
    with pytest.raises(BundleError, match="core_step.plan does not match the SHA-256 recorded when it was built"):
        verify_engine_files(bundle, section, "fp16")
    (bundle_dir / "engines/fp16/core_step.plan").unlink()
    with pytest.raises(BundleError, match="engine file engines/fp16/core_step.plan is missing"):
        verify_engine_files(bundle, section, "fp16")


def test_stale_engines_after_reexport(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    section = manifest["engines"]["fp16"]
    check_engine_sources(section, manifest, "fp16", bundle_dir)
    manifest["files"]["decode.onnx"] = "f" * 64  # the graph was exported again after the build
    with pytest.raises(BundleError, match="engine of decode was built from another version of decode.onnx"):
        check_engine_sources(section, manifest, "fp16", bundle_dir)
    del manifest["files"]["decode.onnx"]  # a robot bundle without its ONNX graphs is fine
    check_engine_sources(section, manifest, "fp16", bundle_dir)


def io(*tensors: tuple[str, str, str, tuple[int, ...]]) -> list[IOTensor]:
    return [IOTensor(*t) for t in tensors]


def test_engine_io_matches_spec(bundle_dir: Path) -> None:
    spec = Bundle.open(bundle_dir).graph(names.VLM_PRELUDE)
    good = [IOTensor(t.name, "input", t.dtype, tuple(-1 if isinstance(d, str) else d for d in t.shape)) for t in spec.inputs]
    good += [IOTensor(t.name, "output", t.dtype, tuple(t.shape)) for t in spec.outputs]  # type: ignore[arg-type]
    check_engine_io(spec, good, ROOT, "fp16")
    # TensorRT 8.6 turns int64 input_ids into int32: accepted
    check_engine_io(spec, [IOTensor(t.name, t.mode, "int32", t.shape) if t.name == names.INPUT_IDS else t for t in good], ROOT, "fp16")
    half = [IOTensor(t.name, t.mode, "float16", t.shape) if t.name == names.INJECTION else t for t in good]
    with pytest.raises(BundleError, match=r"injection: engine output float16 \[1, 8, 32\], spec output float32"):
        check_engine_io(spec, half, ROOT, "fp16")
    with pytest.raises(BundleError, match="proprio is missing from the engine"):
        check_engine_io(spec, [t for t in good if t.name != names.PROPRIO], ROOT, "fp16")


def test_dtype_names_and_l4t() -> None:
    assert numpy_dtype_name("FLOAT") == "float32" and numpy_dtype_name("INT64") == "int64" and numpy_dtype_name("HALF") == "float16"
    with pytest.raises(BundleError):
        numpy_dtype_name("COMPLEX")
    text = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    assert parse_l4t_release(text) == "R36.4.3"
    assert parse_l4t_release("") is None


def test_pycuda_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(TensorRTUnavailable, match="pycuda is not installed: import pycuda.driver failed"):
        require_pycuda()


def test_backend_without_tensorrt(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        load_backend(Bundle.open(bundle_dir), "tensorrt", precision="fp16")


def test_backend_refuses_engines_for_another_tensorrt(bundle_dir: Path, kit: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.add_engines(bundle_dir, "fp16")
    runtimes = kit.fake_gpu_modules(monkeypatch, trt_version="10.7.0.23")
    with pytest.raises(BundleError, match=r"built for TensorRT 10.3.0.30 \(this device runs 10.7.0.23\).*rdvla build"):
        TensorRTBackend(Bundle.open(bundle_dir), precision="fp16")
    assert runtimes() == 0


def test_backend_refuses_engines_for_another_gpu(bundle_dir: Path, kit: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.add_engines(bundle_dir, "fp16")
    kit.fake_gpu_modules(monkeypatch, gpu="NVIDIA GeForce RTX 4090", capability=(8, 9), sms=128)
    with pytest.raises(BundleError, match="compute capability 8.7 .this GPU is 8.9.; GPU Orin with 16 SMs"):
        TensorRTBackend(Bundle.open(bundle_dir), precision="fp16")


def test_backend_checks_engine_hashes_before_deserialising(bundle_dir: Path, kit: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.add_engines(bundle_dir, "fp16")
    bundle = Bundle.open(bundle_dir)  # opened (and verified) before the file is damaged
    (bundle_dir / "engines/fp16/vlm_prelude.plan").write_bytes(b"truncated")
    runtimes = kit.fake_gpu_modules(monkeypatch)
    with pytest.raises(BundleError, match="vlm_prelude.plan does not match the SHA-256"):
        TensorRTBackend(bundle, precision="fp16")
    assert runtimes() == 0


def test_backend_argument_check(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="check_every must be at least 1"):
        TensorRTBackend(Bundle.open(bundle_dir), check_every=0)
