"""Which TensorRT, CUDA, GPU and Jetson Linux this is, and whether a bundle's engines were built for it.

TensorRT 10 or newer only (`check_tensorrt_version`, used by `rdvla build`, the backend and
`rdvla doctor`). The bundles' graphs are ONNX opset 18, and the 8.x ONNX parsers read opset 18
wrongly (onnx/onnx-tensorrt, builtin_op_importers.cpp of release 8.5-GA and 8.6-GA):
ReduceMean calls `reduceTensor` without its second input, so the `axes` input that opset 18 moved
out of the attributes is ignored and every RMSNorm mean reduces over all axes; Shape is imported as
a bare `addShape`, ignoring the `start`/`end` attributes of opset 15; 8.5 has no LayerNormalization
importer at all (docs/operators.md of 8.5-GA lists it as unsupported). The 8.5 Python bindings also
lack `IBuilderConfig.builder_optimization_level` (NVIDIA/TensorRT python/src/infer/pyCore.cpp: absent
in release/8.5, present from release/8.6). JetPack 5 ships TensorRT 8.5 and JetPack 6.0 ships 8.6;
the way out is JetPack 6.1 or newer (TensorRT 10.3).

tensorrt and cuda-python are imported inside functions only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from rdvla.runtime import contract
from rdvla.runtime.backends.tensorrt.cuda_runtime import CUDA_PYTHON_REQUIREMENT, CudaRuntime
from rdvla.runtime.bundle import Bundle
from rdvla.runtime.manifest import MANIFEST, BundleError, EngineEnvironment, EngineSection, Manifest, sha256_file

log = logging.getLogger(__name__)

MIN_TENSORRT_MAJOR = 10
_TRT_MISSING = (
    "TensorRT is not installed: {why}; on a Jetson it comes with JetPack (python3-libnvinfer; a virtual "
    "environment needs --system-site-packages to see it), elsewhere install the TensorRT wheel for your CUDA"
)
_CUDA_MISSING = (
    "cuda-python is not installed: {why}; rdvla drives CUDA through it for TensorRT: "
    f"pip install '{CUDA_PYTHON_REQUIREMENT}' (or pip install 'rdvla[jetson]')"
)


class TensorRTUnavailable(ValueError):
    """TensorRT or CUDA cannot be used here (a ValueError, so the CLI reports it in one line)."""


def check_tensorrt_version(version: str) -> None:
    """Raise TensorRTUnavailable, with the reason and the way out, for a TensorRT older than 10."""
    match = re.match(r"(\d+)\.", version)
    if match is None:
        raise TensorRTUnavailable(f"cannot read the TensorRT version {version!r}; rdvla needs TensorRT {MIN_TENSORRT_MAJOR} or newer")
    if int(match.group(1)) < MIN_TENSORRT_MAJOR:
        raise TensorRTUnavailable(
            f"TensorRT {version} is too old: rdvla needs TensorRT {MIN_TENSORRT_MAJOR} or newer. Its graphs are ONNX "
            "opset 18, which the 8.x ONNX parsers read wrongly (they ignore ReduceMean's axes input, so every RMSNorm "
            "reduces over all axes, and Shape's start/end; 8.5 has no LayerNormalization). JetPack 6.0 ships TensorRT "
            "8.6 and JetPack 5 ships 8.5: upgrade the Jetson to JetPack 6.1 or newer (TensorRT 10.3)"
        )


def require_tensorrt() -> str:
    """Import TensorRT's Python bindings, check the version (10 or newer) and return it, or raise TensorRTUnavailable."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # also a present package whose libnvinfer.so cannot load
        raise TensorRTUnavailable(_TRT_MISSING.format(why=f"import tensorrt failed ({exc})")) from None
    version = getattr(trt, "__version__", None)
    # tensorrt-stubs alone leave an importable namespace package named `tensorrt` with no bindings.
    if not isinstance(version, str) or not hasattr(trt, "Builder"):
        raise TensorRTUnavailable(_TRT_MISSING.format(why="only its type stubs (tensorrt-stubs) are present"))
    check_tensorrt_version(version)
    return version


def require_cuda() -> CudaRuntime:
    """cuda-python's runtime API (`cuda.bindings.runtime`), or TensorRTUnavailable."""
    try:
        from cuda.bindings import runtime
    except (ImportError, OSError) as exc:
        raise TensorRTUnavailable(_CUDA_MISSING.format(why=f"import cuda.bindings.runtime failed ({exc})")) from None
    return CudaRuntime(runtime)


def parse_l4t_release(text: str) -> Optional[str]:
    """'# R36 (release), REVISION: 4.3, ...' (/etc/nv_tegra_release) -> 'R36.4.3'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else None


def l4t_release(path: Path = Path("/etc/nv_tegra_release")) -> Optional[str]:
    """The Jetson Linux (L4T) release, recorded next to engines for benchmarks; None off Jetson."""
    try:
        return parse_l4t_release(path.read_text(errors="replace"))
    except OSError:
        return None


def query_environment(tensorrt_version: str, cuda: CudaRuntime, device: int = 0) -> EngineEnvironment:
    """This machine's GPU, CUDA driver and L4T release; TensorRTUnavailable when CUDA cannot reach the GPU."""
    try:
        gpu = cuda.device_info(device)
        driver = cuda.driver_version()
    except RuntimeError as exc:  # CudaError, or cuda-python 12.6 failing to load libcuda.so.1
        raise TensorRTUnavailable(
            f"CUDA cannot reach GPU {device}: {exc}; check that the NVIDIA driver is loaded (nvidia-smi, or tegrastats on a Jetson)"
        ) from None
    return EngineEnvironment(
        tensorrt_version=tensorrt_version,
        cuda_version=driver,
        gpu_name=gpu.name,
        compute_capability=f"{gpu.capability[0]}.{gpu.capability[1]}",
        sm_count=gpu.sm_count,
        l4t_release=l4t_release(),
    )


def rebuild_hint(root: Path, precision: str) -> str:
    return f"run `rdvla build {root} --precision {precision}` on this device"


def engine_section(manifest: Manifest, precision: str, root: Path) -> EngineSection:
    """`manifest.engines[precision]`, refusing a bundle that lacks it or any graph's engine."""
    engines = manifest.engines
    if precision not in engines:
        have = f" (it has {', '.join(sorted(engines))})" if engines else ""
        raise BundleError(f"{root}: no {precision} TensorRT engines in this bundle{have}: {rebuild_hint(root, precision)}")
    section = engines[precision]
    missing = [g for g in contract.GRAPHS if g not in section.graphs]
    if missing:
        raise BundleError(
            f"{root}: the {precision} engines lack {', '.join(missing)} (a partial build): {rebuild_hint(root, precision)}"
        )
    return section


def check_engine_compat(built: EngineEnvironment, env: EngineEnvironment, precision: str, root: Path) -> None:
    """Refuse engines built (`built`) with another TensorRT or for another GPU than the running ones (`env`)."""
    problems = []
    if built.tensorrt_version != env.tensorrt_version:
        problems.append(f"TensorRT {built.tensorrt_version} (this device runs {env.tensorrt_version})")
    if built.compute_capability != env.compute_capability:
        problems.append(f"compute capability {built.compute_capability} (this GPU is {env.compute_capability})")
    if (built.gpu_name, built.sm_count) != (env.gpu_name, env.sm_count):
        problems.append(f"GPU {built.gpu_name} with {built.sm_count} SMs (this GPU: {env.gpu_name} with {env.sm_count} SMs)")
    if problems:
        raise BundleError(
            f"{root}: the {precision} engines were built for {'; '.join(problems)}. A TensorRT engine only runs "
            f"with the TensorRT version and on the GPU model it was built with: {rebuild_hint(root, precision)}"
        )
    if built.cuda_version != env.cuda_version:
        log.warning("%s engines were built under CUDA %s, this device runs CUDA %s", precision, built.cuda_version, env.cuda_version)


def check_engine_sources(section: EngineSection, manifest: Manifest, precision: str, root: Path) -> None:
    """Refuse engines built from graph files the bundle no longer holds: a re-export changed the graph, or a
    new `rdvla calibrate` replaced the calibrated graph the engine was built from (and removed its file)."""
    files = manifest.files
    for graph, record in section.graphs.items():
        source, digest = record.source, record.source_sha256
        if source not in files:
            raise BundleError(
                f"{root}: the {precision} engine of {graph} was built from {source}, which the bundle no longer holds "
                f"(replaced by a later calibration): {rebuild_hint(root, precision)}"
            )
        if files[source] != digest:
            raise BundleError(
                f"{root}: the {precision} engine of {graph} was built from another version of {source} "
                f"(stale after a re-export): {rebuild_hint(root, precision)}"
            )


def verify_engine_files(bundle: Bundle, section: EngineSection, precision: str) -> dict[str, Path]:
    """Check every engine file against the SHA-256 recorded at build time; returns graph -> path."""
    files = bundle.manifest.files
    paths = {}
    for graph in contract.GRAPHS:
        record = section.graphs[graph]
        rel, digest = record.file, record.sha256
        path = bundle.path(rel)
        if not path.is_file():
            raise BundleError(f"{bundle.root}: engine file {rel} is missing: {rebuild_hint(bundle.root, precision)}")
        if files.get(rel, digest) != digest:
            raise BundleError(f"{bundle.root}: {MANIFEST} lists two different SHA-256 for {rel}: {rebuild_hint(bundle.root, precision)}")
        if not bundle.unchanged_since_hashed(rel) and sha256_file(path) != digest:
            raise BundleError(
                f"{bundle.root}: {rel} does not match the SHA-256 recorded when it was built (corrupted, edited "
                f"or copied from another build): {rebuild_hint(bundle.root, precision)}"
            )
        paths[graph] = path
    return paths
