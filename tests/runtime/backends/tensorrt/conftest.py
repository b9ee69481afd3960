"""A small synthetic bundle and a fake CUDA runtime for the TensorRT tests.

The graphs are tiny ONNX files with the bundle contract's inputs and outputs (tests/conftest.py) and
the engines placeholder bytes: these tests exercise file bookkeeping, hashes and refusals, never
running a graph or an engine. `FakeCudaRuntime`
stands in for cuda-python's `cuda.bindings.runtime` at the API boundary: tuple-of-error returns,
streams that record what is enqueued, stream capture and graphs; it runs no kernel.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from rdvla.runtime.manifest import Manifest

PROMPT = (8, 64)
PLACEHOLDER = b"placeholder bytes, not an ONNX graph nor a TensorRT engine\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(bundles: types.SimpleNamespace, root: Path, graphs: Optional[dict[str, Any]] = None, **extra: Any) -> Path:
    """A synthetic bundle with this room's graph specs (tiny ONNX graphs of the right I/O, never run)."""
    return bundles.write(root, graphs if graphs is not None else bundles.contract_graphs(), bundles.contract_model, PROMPT, **extra)


@pytest.fixture
def bundle_dir(tmp_path: Path, bundles: types.SimpleNamespace) -> Path:
    return write_bundle(bundles, tmp_path / "bundle")


ORIN = {
    "tensorrt_version": "10.3.0.30",
    "cuda_version": "12.6",
    "gpu_name": "Orin",
    "compute_capability": "8.7",
    "sm_count": 16,
    "l4t_release": "R36.4.3",
}


def add_engines(root: Path, precision: str = "fp16", env: Optional[dict[str, Any]] = None) -> Manifest:
    """Record placeholder engine files through the builder's own bookkeeping; returns the new manifest."""
    from rdvla.runtime.backends.tensorrt.environment import EngineEnvironment
    from rdvla.runtime.backends.tensorrt.build_record import EngineRecord, record_engines

    manifest = Manifest.from_json(json.loads((root / "manifest.json").read_text()))
    out = root / "engines" / precision
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for graph, spec in manifest.graphs.items():
        data = PLACEHOLDER + f"{precision}/{graph}".encode()
        (out / f"{graph}.plan").write_bytes(data)
        records.append(
            EngineRecord(
                graph=graph,
                file=f"engines/{precision}/{graph}.plan",
                sha256=sha(data),
                bytes=len(data),
                source=spec.file,
                source_sha256=manifest.files[spec.file],
                quantized=False,
                strongly_typed=False,
                flags=("FP16", "OBEY_PRECISION_CONSTRAINTS"),
                pinned_fp32_layers=3,
                build_seconds=1.0,
                io=(),
                layer_precisions={"FP16": 40, "FP32": 12},
            )
        )
    log = b"build log\n"
    (out / "build.log").write_bytes(log)
    environment = EngineEnvironment.from_section(env or ORIN)
    new = record_engines(
        manifest, precision, records, environment, {"precision": precision}, (f"engines/{precision}/build.log", sha(log)), "2026-01-01T00:00:00+00:00"
    )
    new.save(root)
    return new


class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's names
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInsufficientDriver = 35
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


OK = cudaError_t.cudaSuccess


class FakeCudaRuntime(types.SimpleNamespace):
    """The part of `cuda.bindings.runtime` rdvla calls, returning (error, *values) tuples as cuda-python does.

    A stream records the work enqueued on it (`enqueue`); between begin and end capture that work
    goes into a graph instead, and launching the graph's executable replays it onto the stream.
    `failures` maps a function name to the error every call of it returns.
    """

    cudaError_t = cudaError_t
    cudaStreamCaptureMode = cudaStreamCaptureMode

    def __init__(self, gpu: str = "Orin", capability: tuple[int, int] = (8, 7), sms: int = 16, driver: int = 12060) -> None:
        super().__init__()
        self.gpu, self.capability, self.sms, self.driver = gpu, capability, sms, driver
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.failures: dict[str, cudaError_t] = {}
        self.work: dict[int, list[str]] = {}  # stream -> what ran on it, in order
        self.capturing: dict[int, list[str]] = {}  # stream -> work recorded into the graph being captured
        self.graphs: dict[int, list[str]] = {}  # live graph handles -> their work
        self.executables: dict[int, list[str]] = {}  # live executable handles -> their work
        self.last_error = OK
        self._handles = iter(range(1000, 10**6))

    def _call(self, name: str, *args: Any) -> Optional[cudaError_t]:
        self.calls.append((name, args))
        return self.failures.get(name)

    def enqueue(self, stream: int, what: str) -> None:
        """What `execute_async_v3` would put on `stream`: recorded, or captured while capturing."""
        (self.capturing[stream] if stream in self.capturing else self.work.setdefault(stream, [])).append(what)

    def cudaGetDeviceProperties(self, device: int) -> tuple[Any, ...]:
        error = self._call("cudaGetDeviceProperties", device)
        if error:
            return (error, None)
        props = types.SimpleNamespace(name=self.gpu.encode() + b"\0" * 8, major=self.capability[0], minor=self.capability[1],
                                      multiProcessorCount=self.sms)
        return (OK, props)

    def cudaDriverGetVersion(self) -> tuple[Any, ...]:
        return (self._call("cudaDriverGetVersion") or OK, self.driver)

    def cudaSetDevice(self, device: int) -> tuple[Any, ...]:
        return (self._call("cudaSetDevice", device) or OK,)

    def cudaGetLastError(self) -> tuple[Any, ...]:
        self.calls.append(("cudaGetLastError", ()))
        error, self.last_error = self.last_error, OK
        return (error,)

    def cudaStreamBeginCapture(self, stream: int, mode: cudaStreamCaptureMode) -> tuple[Any, ...]:
        error = self._call("cudaStreamBeginCapture", stream, mode)
        if error:
            return (error,)
        self.capturing[stream] = []
        return (OK,)

    def cudaStreamEndCapture(self, stream: int) -> tuple[Any, ...]:
        error = self._call("cudaStreamEndCapture", stream)
        work = self.capturing.pop(stream)  # capture mode ends whatever the result
        if error:
            self.last_error = error
            return (error, None)
        handle = next(self._handles)
        self.graphs[handle] = work
        return (OK, handle)

    def cudaGraphInstantiate(self, graph: int, flags: int) -> tuple[Any, ...]:
        error = self._call("cudaGraphInstantiate", graph, flags)
        if error:
            return (error, None)
        handle = next(self._handles)
        self.executables[handle] = list(self.graphs[graph])
        return (OK, handle)

    def cudaGraphDestroy(self, graph: int) -> tuple[Any, ...]:
        self.calls.append(("cudaGraphDestroy", (graph,)))
        del self.graphs[graph]
        return (OK,)

    def cudaGraphLaunch(self, executable: int, stream: int) -> tuple[Any, ...]:
        error = self._call("cudaGraphLaunch", executable, stream)
        if error:
            return (error,)
        self.work.setdefault(stream, []).extend(f"graph {executable}: {w}" for w in self.executables[executable])
        return (OK,)

    def cudaGraphExecDestroy(self, executable: int) -> tuple[Any, ...]:
        self.calls.append(("cudaGraphExecDestroy", (executable,)))
        del self.executables[executable]
        return (OK,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[Any, ...]:
        return (self._call("cudaStreamSynchronize", stream) or OK,)


def fake_gpu_modules(
    monkeypatch: pytest.MonkeyPatch, trt_version: str = "10.3.0.30", gpu: str = "Orin", capability: tuple[int, int] = (8, 7), sms: int = 16
) -> Callable[[], int]:
    """Stand-ins for `tensorrt` and cuda-python's runtime module that only report versions and the GPU's identity.

    They exist to drive the refusal paths; they cannot deserialise or run anything: the fake
    Runtime raises if reached. Returns a function counting Runtime constructions.
    """
    created = []

    class Runtime:
        def __init__(self, *args: Any) -> None:
            created.append(1)
            raise AssertionError("a refusal test reached engine deserialisation")

    trt = types.ModuleType("tensorrt")
    trt.__version__ = trt_version  # type: ignore[attr-defined]
    trt.Builder = object  # type: ignore[attr-defined]
    trt.Runtime = Runtime  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    install_fake_cuda(monkeypatch, FakeCudaRuntime(gpu, capability, sms))
    return lambda: len(created)


def install_fake_cuda(monkeypatch: pytest.MonkeyPatch, runtime: Any) -> None:
    """Make `from cuda.bindings import runtime` return `runtime` (None: make the import fail)."""
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = runtime  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", cuda if runtime is not None else None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings if runtime is not None else None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)


@pytest.fixture
def kit(bundles: types.SimpleNamespace) -> types.SimpleNamespace:
    """The helpers above, for tests (conftest modules are not importable under --import-mode=importlib)."""
    return types.SimpleNamespace(
        write_bundle=functools.partial(write_bundle, bundles),
        edit_manifest=bundles.edit_manifest,
        graph_specs=bundles.contract_graphs,
        add_engines=add_engines,
        fake_gpu_modules=fake_gpu_modules,
        install_fake_cuda=install_fake_cuda,
        FakeCudaRuntime=FakeCudaRuntime,
        cudaError_t=cudaError_t,
        sha=sha,
        ORIN=dict(ORIN),
        PROMPT=PROMPT,
        HIDDEN=bundles.HIDDEN,
        HEADS=bundles.HEADS,
        CONTEXT=bundles.CONTEXT,
    )
