"""A small synthetic bundle (manifest + placeholder files) for the TensorRT tests; no TensorRT, no GPU.

The graph and engine files written here hold placeholder bytes: these tests exercise file
bookkeeping, hashes and refusals, never parsing or running a graph or an engine.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from rdvla.runtime.backends import base as names
from rdvla.runtime.bundle import SCHEMA_VERSION

HIDDEN, HEADS, CONTEXT = 32, 4, 577
PROMPT = (8, 64)
PLACEHOLDER = b"placeholder bytes, not an ONNX graph nor a TensorRT engine\n"


def _t(name: str, dtype: str, shape: list[Any]) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def graph_specs(hidden: int = HIDDEN, heads: int = HEADS, n_core: int = 1, n_coda: int = 1) -> dict[str, Any]:
    kv = [1, heads, CONTEXT, hidden // heads]
    latent = [1, 8, hidden]
    core = [_t(n, "float32", kv) for n in names.kv_names("core", n_core)]
    coda = [_t(n, "float32", kv) for n in names.kv_names("coda", n_coda)]
    injection = _t(names.INJECTION, "float32", latent)
    specs = {
        names.VLM_PRELUDE: {
            "file": "vlm_prelude.onnx",
            "inputs": [
                _t(names.PIXEL_VALUES, "float32", [1, 12, 224, 224]),
                _t(names.INPUT_IDS, "int64", [1, "prompt_len"]),
                _t(names.PROPRIO, "float32", [1, 8]),
            ],
            "outputs": [injection, *core, *coda],
        },
        names.CORE_STEP: {
            "file": "core_step.onnx",
            "inputs": [_t(names.LATENT, "float32", latent), injection, *core],
            "outputs": [_t(names.NEXT_LATENT, "float32", latent)],
        },
        names.CORE_STEP_DECODE: {
            "file": "core_step_decode.onnx",
            "inputs": [_t(names.LATENT, "float32", latent), _t(names.PREV_ACTIONS, "float32", [1, 8, 7]), injection, *core, *coda],
            "outputs": [
                _t(names.NEXT_LATENT, "float32", latent),
                _t(names.ACTIONS, "float32", [1, 8, 7]),
                _t(names.MSE, "float32", [1]),
                _t(names.COSINE, "float32", [1]),
            ],
        },
        names.DECODE: {
            "file": "decode.onnx",
            "inputs": [_t(names.LATENT, "float32", latent), *coda],
            "outputs": [_t(names.ACTIONS, "float32", [1, 8, 7])],
        },
    }
    return json.loads(json.dumps(specs))  # no tensor dict shared between graphs: tests edit one graph at a time


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(root: Path, graphs: Optional[dict[str, Any]] = None, **extra: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    graphs = graphs if graphs is not None else graph_specs()
    files = {}
    for spec in graphs.values():
        (root / spec["file"]).write_bytes(PLACEHOLDER + spec["file"].encode())
        files[spec["file"]] = sha((root / spec["file"]).read_bytes())
    manifest = {
        "schema": "rdvla.bundle",
        "schema_version": SCHEMA_VERSION,
        "model": {
            "hidden_dim": HIDDEN,
            "num_heads": HEADS,
            "chunk_len": 8,
            "action_dim": 7,
            "proprio_dim": 8,
            "num_images": 2,
            "context_tokens": CONTEXT,
            "prelude_vlm_layers": [11],
            "recurrent_vlm_layers": [23],
            "coda_vlm_layers": [23],
            "init_sigma": 0.02,
        },
        "graphs": graphs,
        "prompt": {"min_len": PROMPT[0], "max_len": PROMPT[1]},
        "preprocess": {},
        "normalization": {
            "key": "test",
            "action": {"q01": [-1.0] * 7, "q99": [1.0] * 7},
            "proprio": {"q01": [-1.0] * 8, "q99": [1.0] * 8},
        },
        "files": files,
        **extra,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle")


ORIN = {
    "tensorrt_version": "10.3.0.30",
    "cuda_version": "12.6",
    "gpu_name": "Orin",
    "compute_capability": "8.7",
    "sm_count": 16,
    "l4t_release": "R36.4.3",
}


def add_engines(root: Path, precision: str = "fp16", env: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Record placeholder engine files through the builder's own bookkeeping; returns the new manifest."""
    from rdvla.export.tensorrt_build import EngineRecord, record_engines, save_manifest
    from rdvla.runtime.backends.tensorrt import EngineEnvironment

    manifest = json.loads((root / "manifest.json").read_text())
    out = root / "engines" / precision
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for graph, spec in manifest["graphs"].items():
        data = PLACEHOLDER + f"{precision}/{graph}".encode()
        (out / f"{graph}.plan").write_bytes(data)
        records.append(
            EngineRecord(
                graph=graph,
                file=f"engines/{precision}/{graph}.plan",
                sha256=sha(data),
                bytes=len(data),
                source=spec["file"],
                source_sha256=manifest["files"][spec["file"]],
                quantized=False,
                strongly_typed=False,
                flags=("FP16", "OBEY_PRECISION_CONSTRAINTS"),
                fp32_layers=3,
                build_seconds=1.0,
                io=(),
            )
        )
    log = b"build log\n"
    (out / "build.log").write_bytes(log)
    environment = EngineEnvironment.from_section(env or ORIN)
    new = record_engines(
        manifest, precision, records, environment, {"precision": precision}, (f"engines/{precision}/build.log", sha(log)), "2026-01-01T00:00:00+00:00"
    )
    save_manifest(root, new)
    return new


def fake_gpu_modules(
    monkeypatch: pytest.MonkeyPatch, trt_version: str = "10.3.0.30", gpu: str = "Orin", capability: tuple[int, int] = (8, 7), sms: int = 16
) -> Callable[[], int]:
    """Stand-ins for `tensorrt` and `pycuda.driver` that only report versions and the GPU's identity.

    They exist to drive the backend's refusal paths; they cannot deserialise or run anything: the
    fake Runtime raises if reached, and the fake device has no context to make current. Returns a
    function counting Runtime constructions.
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

    class Device:
        def __init__(self, index: int) -> None:
            pass

        def name(self) -> str:
            return gpu

        def compute_capability(self) -> tuple[int, int]:
            return capability

        def get_attribute(self, attribute: str) -> int:
            assert attribute == "MULTIPROCESSOR_COUNT"
            return sms

    driver = types.ModuleType("pycuda.driver")
    driver.init = lambda: None  # type: ignore[attr-defined]
    driver.Device = Device  # type: ignore[attr-defined]
    driver.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="MULTIPROCESSOR_COUNT")  # type: ignore[attr-defined]
    driver.get_driver_version = lambda: 12060  # type: ignore[attr-defined]
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    return lambda: len(created)


@pytest.fixture
def kit() -> types.SimpleNamespace:
    """The helpers above, for tests (conftest modules are not importable under --import-mode=importlib)."""
    return types.SimpleNamespace(
        write_bundle=write_bundle,
        graph_specs=graph_specs,
        add_engines=add_engines,
        fake_gpu_modules=fake_gpu_modules,
        sha=sha,
        ORIN=dict(ORIN),
        PROMPT=PROMPT,
        HIDDEN=HIDDEN,
        HEADS=HEADS,
        CONTEXT=CONTEXT,
    )
