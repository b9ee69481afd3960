"""The TensorRT backend's refusals: missing libraries, TensorRT older than 10, engines for another target,
corrupted or stale files, engine I/O that differs from the bundle.

The constructor tests use stand-in modules that only report a TensorRT version and a GPU identity;
every case here is refused before an engine would be deserialised, and the stand-in Runtime fails
the test if it is reached.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from rdvla.runtime import contract
from rdvla.runtime.backends.registry import load_backend
from rdvla.runtime.backends.tensorrt.backend import TensorRTBackend
from rdvla.runtime.backends.tensorrt.buffers import check_engine_io, check_resolved_outputs, numpy_dtype_name
from rdvla.runtime.backends.tensorrt.cuda_runtime import CUDA_PYTHON_REQUIREMENT, CudaRuntime
from rdvla.runtime.backends.tensorrt.environment import (
    EngineEnvironment,
    TensorRTUnavailable,
    check_engine_compat,
    check_engine_sources,
    check_tensorrt_version,
    engine_section,
    parse_l4t_release,
    query_environment,
    require_cuda,
    require_tensorrt,
    verify_engine_files,
)
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import BundleError, TensorSpec

ROOT = Path("/robot/bundle")


def env(**changes: object) -> EngineEnvironment:
    base = {"tensorrt_version": "10.3.0.30", "cuda_version": "12.6", "gpu_name": "Orin", "compute_capability": "8.7", "sm_count": 16}
    return EngineEnvironment.from_section({**base, **changes})


def test_missing_engines_section(bundle_dir: Path) -> None:
    manifest = Bundle.open(bundle_dir).manifest
    with pytest.raises(BundleError, match=r"no fp16 TensorRT engines in this bundle: run `rdvla build .* --precision fp16` on this device"):
        engine_section(manifest, "fp16", bundle_dir)


def test_other_precision_only(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp32")
    with pytest.raises(BundleError, match=r"no int8 TensorRT engines in this bundle \(it has fp32\)"):
        engine_section(manifest, "int8", bundle_dir)


def test_partial_section(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    del manifest.engines["fp16"].graphs["core_step_decode"]
    with pytest.raises(BundleError, match="lack core_step_decode"):
        engine_section(manifest, "fp16", bundle_dir)


def test_same_target_accepted() -> None:
    check_engine_compat(env(), env(l4t_release="R36.4.3"), "fp16", ROOT)


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
        check_engine_compat(env(**built), env(), "fp16", ROOT)
    message = str(info.value)
    assert expected in message
    assert "run `rdvla build /robot/bundle --precision fp16` on this device" in message


def test_cuda_difference_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_engine_compat(env(cuda_version="12.2"), env(), "fp16", ROOT)
    assert "built under CUDA 12.2" in caplog.text


def test_malformed_section() -> None:
    with pytest.raises(BundleError, match="malformed engines section"):
        EngineEnvironment.from_section({"tensorrt_version": "10.3"})


def test_an_engine_the_bundle_just_hashed_is_not_hashed_again(bundle_dir: Path, kit: types.SimpleNamespace,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of MB per engine on a Jetson: hashed once when the bundle opens, again only if the file changed since."""
    from rdvla.runtime.backends.tensorrt import environment

    kit.add_engines(bundle_dir, "fp16")
    bundle = Bundle.open(bundle_dir)
    section = engine_section(bundle.manifest, "fp16", bundle_dir)
    hashed: list[str] = []
    real = environment.sha256_file
    monkeypatch.setattr(environment, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    verify_engine_files(bundle, section, "fp16")
    assert hashed == []
    (bundle_dir / "engines/fp16/decode.plan").write_bytes((bundle_dir / "engines/fp16/decode.plan").read_bytes())  # touched
    verify_engine_files(bundle, section, "fp16")
    assert hashed == ["decode.plan"]
    unverified = Bundle.open(bundle_dir, verify_hashes=False)
    hashed.clear()
    verify_engine_files(unverified, section, "fp16")
    assert sorted(hashed) == sorted(f"{graph}.plan" for graph in contract.GRAPHS)


def test_engine_sha_mismatch(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    kit.add_engines(bundle_dir, "fp16")
    bundle = Bundle.open(bundle_dir)
    section = engine_section(bundle.manifest, "fp16", bundle_dir)
    assert set(verify_engine_files(bundle, section, "fp16")) == set(contract.GRAPHS)
    (bundle_dir / "engines/fp16/core_step.plan").write_bytes(b"flipped bits")
    with pytest.raises(BundleError, match="core_step.plan does not match the SHA-256 recorded when it was built"):
        verify_engine_files(bundle, section, "fp16")
    (bundle_dir / "engines/fp16/core_step.plan").unlink()
    with pytest.raises(BundleError, match="engine file engines/fp16/core_step.plan is missing"):
        verify_engine_files(bundle, section, "fp16")


def test_stale_engines_after_reexport(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    manifest = kit.add_engines(bundle_dir, "fp16")
    section = manifest.engines["fp16"]
    check_engine_sources(section, manifest, "fp16", bundle_dir)
    manifest.files["decode.onnx"] = "f" * 64  # the graph was exported again after the build
    with pytest.raises(BundleError, match="engine of decode was built from another version of decode.onnx"):
        check_engine_sources(section, manifest, "fp16", bundle_dir)
    del manifest.files["decode.onnx"]  # a later calibration replaced the graph the engine came from
    with pytest.raises(BundleError, match="engine of decode was built from decode.onnx, which the bundle no longer holds"):
        check_engine_sources(section, manifest, "fp16", bundle_dir)


def engine_view(spec: object, resolved_outputs: bool = True) -> list[TensorSpec]:
    """The I/O a correct engine of `spec` reports: -1 for named dims, outputs static (or -1 where noted)."""
    inputs = [TensorSpec(t.name, t.dtype, tuple(-1 if isinstance(d, str) else d for d in t.shape), "input") for t in spec.inputs]  # type: ignore[attr-defined]
    outputs = [TensorSpec(t.name, t.dtype, t.shape, "output") for t in spec.outputs]  # type: ignore[attr-defined]
    return inputs + outputs


def test_engine_io_matches_spec(bundle_dir: Path) -> None:
    spec = Bundle.open(bundle_dir).graph(contract.VLM_PRELUDE)
    good = engine_view(spec)
    check_engine_io(spec, good, ROOT, "fp16")
    # int32 input_ids (what TensorRT 8.6 made of int64) is no longer accepted: TensorRT 10 keeps INT64 I/O.
    int32 = [TensorSpec(t.name, "int32", t.shape, t.mode) if t.name == contract.INPUT_IDS else t for t in good]
    with pytest.raises(BundleError, match=r"input_ids: engine input int32 \[1, -1\], spec input int64 \[1, 'prompt_len'\]"):
        check_engine_io(spec, int32, ROOT, "fp16")
    half = [TensorSpec(t.name, "float16", t.shape, t.mode) if t.name == contract.INJECTION else t for t in good]
    with pytest.raises(BundleError, match=r"injection: engine output float16 \[1, 8, 32\], spec output float32"):
        check_engine_io(spec, half, ROOT, "fp16")
    with pytest.raises(BundleError, match="proprio is missing from the engine"):
        check_engine_io(spec, [t for t in good if t.name != contract.PROPRIO], ROOT, "fp16")
    static_ids = [TensorSpec(t.name, t.dtype, (1, 64), t.mode) if t.name == contract.INPUT_IDS else t for t in good]
    with pytest.raises(BundleError, match=r"input_ids: engine input int64 \[1, 64\]"):
        check_engine_io(spec, static_ids, ROOT, "fp16")


def test_outputs_derived_from_the_prompt_axis_are_checked_once_resolved(bundle_dir: Path, kit: types.SimpleNamespace) -> None:
    """TensorRT may report -1 for K/V outputs it derives from prompt_len + 575 though they are fixed at 577."""
    spec = Bundle.open(bundle_dir).graph(contract.VLM_PRELUDE)
    kv = (1, kit.HEADS, kit.CONTEXT, kit.HIDDEN // kit.HEADS)
    derived = [TensorSpec(t.name, t.dtype, (1, kit.HEADS, -1, kit.HIDDEN // kit.HEADS), t.mode) if t.name == "core0_keys" else t
               for t in engine_view(spec)]
    check_engine_io(spec, derived, ROOT, "fp16")  # accepted at load...
    resolved = {t.name: t.shape for t in spec.outputs}
    check_resolved_outputs(spec, resolved, {"prompt_len": 20}, ROOT, "fp16")  # ...and checked once the prompt length is set
    wrong = {**resolved, "core0_keys": (1, kit.HEADS, 20 + 575, kit.HIDDEN // kit.HEADS)}
    with pytest.raises(BundleError, match=r"with prompt_len=20 the fp16 engine of vlm_prelude makes outputs of other shapes.*"
                                          r"core0_keys is \[1, 4, 595, 8\], expected \[1, 4, 577, 8\]"):
        check_resolved_outputs(spec, wrong, {"prompt_len": 20}, ROOT, "fp16")
    assert tuple(resolved["core0_keys"]) == kv


def test_only_graphs_with_dynamic_inputs_may_report_dynamic_outputs(bundle_dir: Path) -> None:
    spec = Bundle.open(bundle_dir).graph(contract.CORE_STEP)
    dynamic_out = [TensorSpec(t.name, t.dtype, (1, -1, t.shape[2]), t.mode) if t.name == contract.NEXT_LATENT else t for t in engine_view(spec)]
    with pytest.raises(BundleError, match=r"next_latent: engine output float32 \[1, -1, 32\]"):
        check_engine_io(spec, dynamic_out, ROOT, "fp16")
    vlm = Bundle.open(bundle_dir).graph(contract.VLM_PRELUDE)
    dynamic_in = [TensorSpec(t.name, t.dtype, (-1, 8), t.mode) if t.name == contract.PROPRIO else t for t in engine_view(vlm)]
    with pytest.raises(BundleError, match=r"proprio: engine input float32 \[-1, 8\]"):
        check_engine_io(vlm, dynamic_in, ROOT, "fp16")


def test_dtype_names_and_l4t() -> None:
    assert numpy_dtype_name("FLOAT") == "float32" and numpy_dtype_name("INT64") == "int64" and numpy_dtype_name("HALF") == "float16"
    with pytest.raises(BundleError):
        numpy_dtype_name("COMPLEX")
    text = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
    assert parse_l4t_release(text) == "R36.4.3"
    assert parse_l4t_release("") is None


@pytest.mark.parametrize("version", ["8.6.2.3", "8.5.2.2", "7.1.3"])
def test_tensorrt_older_than_10_refused_with_the_reason_and_the_way_out(version: str) -> None:
    with pytest.raises(TensorRTUnavailable) as info:
        check_tensorrt_version(version)
    message = str(info.value)
    assert f"TensorRT {version} is too old: rdvla needs TensorRT 10 or newer" in message
    assert "opset 18" in message and "ReduceMean's axes input" in message and "LayerNormalization" in message
    assert "JetPack 6.0 ships TensorRT 8.6 and JetPack 5 ships 8.5" in message
    assert "JetPack 6.1 or newer (TensorRT 10.3)" in message


@pytest.mark.parametrize("version", ["10.3.0.30", "10.13.2.6", "11.0.0"])
def test_tensorrt_10_and_newer_accepted(version: str) -> None:
    check_tensorrt_version(version)


def test_unreadable_tensorrt_version_refused() -> None:
    with pytest.raises(TensorRTUnavailable, match="cannot read the TensorRT version 'dev'"):
        check_tensorrt_version("dev")


def test_require_tensorrt_checks_the_version(monkeypatch: pytest.MonkeyPatch, kit: types.SimpleNamespace) -> None:
    kit.fake_gpu_modules(monkeypatch, trt_version="8.6.2.3")
    with pytest.raises(TensorRTUnavailable, match="TensorRT 8.6.2.3 is too old"):
        require_tensorrt()


def test_cuda_python_absent(monkeypatch: pytest.MonkeyPatch, kit: types.SimpleNamespace) -> None:
    kit.install_fake_cuda(monkeypatch, None)
    with pytest.raises(TensorRTUnavailable) as info:
        require_cuda()
    assert "cuda-python is not installed: import cuda.bindings.runtime failed" in str(info.value)
    assert f"pip install '{CUDA_PYTHON_REQUIREMENT}'" in str(info.value)


def test_pyproject_installs_the_required_cuda_python() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10 (JetPack 6)
        import tomli as tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[4] / "pyproject.toml").read_text())["project"]
    assert CUDA_PYTHON_REQUIREMENT in project["optional-dependencies"]["jetson"]


def test_environment_from_the_cuda_runtime(kit: types.SimpleNamespace) -> None:
    env = query_environment("10.3.0.30", CudaRuntime(kit.FakeCudaRuntime("Orin", (8, 7), 16, driver=12060)))
    assert (env.gpu_name, env.compute_capability, env.sm_count, env.cuda_version) == ("Orin", "8.7", 16, "12.6")


def test_no_driver_is_one_clear_line(kit: types.SimpleNamespace) -> None:
    fake = kit.FakeCudaRuntime()
    fake.failures["cudaGetDeviceProperties"] = kit.cudaError_t.cudaErrorInsufficientDriver
    with pytest.raises(TensorRTUnavailable, match=r"CUDA cannot reach GPU 0: cudaGetDeviceProperties failed with "
                                                  r"cudaErrorInsufficientDriver \(35\); check that the NVIDIA driver is loaded"):
        query_environment("10.3.0.30", CudaRuntime(fake))


def test_real_cuda_python_without_a_driver() -> None:
    """This machine: cuda-python imports, and without a driver (12.6: libcuda.so.1 not found; 12.9: error 35) the
    environment query is one clear line too."""
    try:
        cuda = require_cuda()
    except TensorRTUnavailable:
        pytest.skip("cuda-python is not installed here")
    try:
        cuda.device_info()
    except Exception:
        pass
    else:
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(TensorRTUnavailable, match=r"CUDA cannot reach GPU 0: .*check that the NVIDIA driver is loaded"):
        query_environment("10.3.0.30", cuda)


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


def test_backend_refuses_tensorrt_8(bundle_dir: Path, kit: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.add_engines(bundle_dir, "fp16")
    runtimes = kit.fake_gpu_modules(monkeypatch, trt_version="8.6.2.3")
    with pytest.raises(TensorRTUnavailable, match="TensorRT 8.6.2.3 is too old"):
        load_backend(Bundle.open(bundle_dir), "tensorrt", precision="fp16")
    assert runtimes() == 0


def test_backend_has_no_check_every_parameter(bundle_dir: Path) -> None:
    # The loop's readback cadence belongs to Policy; the backend reads the scalars exactly when asked.
    with pytest.raises(TypeError, match="check_every"):
        TensorRTBackend(Bundle.open(bundle_dir), check_every=2)  # type: ignore[call-arg]
