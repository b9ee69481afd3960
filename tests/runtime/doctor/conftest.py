"""A Jetson described to `rdvla doctor` without one: a fake Probe holding files, command outputs and modules.

`jetson` is a healthy Jetson AGX Orin 64GB on JetPack 6.2 (L4T R36.4.3, TensorRT 10.3, CUDA 12.6), in MAXN
with its clocks locked, one RealSense on USB 3, as a user without root (so no EMC clock). Tests change
what they need. The stand-in `cuda.bindings.runtime` only reports the GPU's identity and CUDA's versions; nothing here runs TensorRT.
"""

from __future__ import annotations

import argparse
import enum
import fnmatch
import functools
import hashlib
import json
import types
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import pytest

from rdvla.devices.cameras.realsense import CameraInfo
from rdvla.runtime import contract
from rdvla.runtime.backends.tensorrt.environment import EngineEnvironment, TensorRTUnavailable
from rdvla.runtime.manifest import read_manifest
from rdvla.runtime.backends.tensorrt.cuda_runtime import CudaRuntime
from rdvla.runtime.doctor import CommandOutput, DiskUsage

ORIN = {"tensorrt_version": "10.3.0.30", "cuda_version": "12.6", "gpu_name": "Orin", "compute_capability": "8.7", "sm_count": 16}
L4T_R36_4_3 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
NVPMODEL_CONF_AGX_ORIN_64GB = (
    "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\nGPU MAX_FREQ -1\n\n"
    "< POWER_MODEL ID=1 NAME=MODE_15W >\nGPU MAX_FREQ 420750000\n\n"
    "< POWER_MODEL ID=2 NAME=MODE_30W >\n< POWER_MODEL ID=3 NAME=MODE_50W >\n\n< PM_CONFIG DEFAULT=2 >\n"
)
CPU_MAX_KHZ, GPU_MAX_HZ = 2201600, 1300500000


def _answer(value: Any) -> Any:
    if isinstance(value, Exception):
        raise value
    return value


class FakeProbe:
    """rdvla.runtime.doctor.Probe from plain data: a path is readable when `files` holds it, a program
    installed when `commands` has its argv, a module importable when `modules` has its name."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.commands: dict[tuple[str, ...], CommandOutput] = {}
        self.modules: dict[str, Any] = {}
        self.tensorrt: Union[str, Exception] = TensorRTUnavailable("TensorRT is not installed: import tensorrt failed")
        self.cuda: Any = TensorRTUnavailable("cuda-python is not installed: import cuda.bindings.runtime failed")
        self.cameras: Union[tuple[str, list[CameraInfo]], Exception] = ("2.56.3", [])
        self.disk = DiskUsage(total=1_000_000_000_000, free=400_000_000_000)

    def read_text(self, path: str) -> Optional[str]:
        return self.files.get(path)

    def glob(self, pattern: str) -> list[str]:
        parts = pattern.split("/")
        found = set()
        for path in self.files:  # directories exist as the prefixes of the files under them
            segments = path.split("/")
            if len(segments) >= len(parts) and all(fnmatch.fnmatchcase(s, p) for s, p in zip(segments, parts)):
                found.add("/".join(segments[: len(parts)]))
        return sorted(found)

    def run(self, argv: Sequence[str]) -> Optional[CommandOutput]:
        return self.commands.get(tuple(argv))

    def disk_usage(self, path: str) -> DiskUsage:
        return self.disk

    def tensorrt_version(self) -> str:
        return str(_answer(self.tensorrt))

    def cuda_runtime(self) -> CudaRuntime:
        return CudaRuntime(_answer(self.cuda))

    def import_module(self, name: str) -> Any:
        if name not in self.modules:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return self.modules[name]

    def realsense(self) -> tuple[str, list[CameraInfo]]:
        version, cameras = _answer(self.cameras)
        return version, list(cameras)

    def set_clocks(self, cpu_floor_khz: int = CPU_MAX_KHZ, gpu_floor_hz: int = GPU_MAX_HZ, gpu_now_hz: int = GPU_MAX_HZ) -> None:
        for policy in (0, 4, 8):  # the AGX Orin's three CPU clusters
            base = f"/sys/devices/system/cpu/cpufreq/policy{policy}"
            self.files.update({f"{base}/scaling_cur_freq": f"{max(cpu_floor_khz, 1190400)}\n",
                               f"{base}/scaling_min_freq": f"{cpu_floor_khz}\n", f"{base}/scaling_max_freq": f"{CPU_MAX_KHZ}\n"})
        gpu = "/sys/class/devfreq/17000000.gpu"
        self.files.update({f"{gpu}/device/of_node/name": "gpu\x00", f"{gpu}/cur_freq": f"{gpu_now_hz}\n",
                           f"{gpu}/min_freq": f"{gpu_floor_hz}\n", f"{gpu}/max_freq": f"{GPU_MAX_HZ}\n"})


class CudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35


def fake_cuda_runtime(gpu: str = "Orin", capability: tuple[int, int] = (8, 7), sms: int = 16, runtime: int = 12060,
                      driver: int = 12060, error: CudaError = CudaError.cudaSuccess) -> Any:
    """A stand-in for cuda-python's `cuda.bindings.runtime` reporting a GPU and CUDA's versions: every call
    returns (error, value), as cuda-python's do."""
    properties = types.SimpleNamespace(name=gpu.encode() + b"\0" * 8, major=capability[0], minor=capability[1],
                                       multiProcessorCount=sms)
    return types.SimpleNamespace(
        cudaError_t=CudaError,
        cudaRuntimeGetVersion=lambda: (error, runtime),
        cudaDriverGetVersion=lambda: (error, driver),
        cudaGetDeviceProperties=lambda device: (error, properties),
    )


def camera(serial: str = "234322070123", usb: str = "3.2") -> CameraInfo:
    return CameraInfo(serial=serial, name="Intel RealSense D435I", firmware="5.16.0.1", usb_type=usb, product_line="D400")


def healthy_jetson() -> FakeProbe:
    probe = FakeProbe()
    probe.files.update({
        "/etc/nv_tegra_release": L4T_R36_4_3,
        "/etc/nvpmodel.conf": NVPMODEL_CONF_AGX_ORIN_64GB,
        "/var/lib/nvpmodel/status": "pmode:0000 fmode:cool\n",
        "/proc/meminfo": "MemTotal:       64335836 kB\nMemFree:        59000000 kB\nMemAvailable:   60123456 kB\n",
        # Another devfreq device, unlocked: the clock check must only look at the GPU's.
        "/sys/class/devfreq/15340000.vic/device/of_node/name": "vic\x00",
        "/sys/class/devfreq/15340000.vic/cur_freq": "115200000\n",
        "/sys/class/devfreq/15340000.vic/min_freq": "115200000\n",
        "/sys/class/devfreq/15340000.vic/max_freq": "729600000\n",
    })
    probe.set_clocks()
    probe.commands[("nvpmodel", "-q")] = CommandOutput(0, "NV Power Mode: MAXN\n0\n", "")
    probe.modules.update({"rdvla._native": types.SimpleNamespace(), "numpy": types.SimpleNamespace(__version__="1.26.4")})
    probe.tensorrt = ORIN["tensorrt_version"]
    probe.cuda = fake_cuda_runtime()
    probe.cameras = ("2.56.3", [camera()])
    return probe


@pytest.fixture
def jetson() -> FakeProbe:
    return healthy_jetson()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(bundles: types.SimpleNamespace, root: Path, engines: Optional[dict[str, dict[str, Any]]] = None) -> Path:
    """A bundle that opens (the contract's graphs, never run by the doctor) with engines recorded, through the
    builder's own bookkeeping, for each precision -> environment of `engines`; the engines are placeholders."""
    from rdvla.runtime.backends.tensorrt.build_record import EngineRecord, record_engines

    bundles.write(root, bundles.contract_graphs(), bundles.contract_model, (8, 64))
    manifest = read_manifest(root)
    for precision, env in (engines or {}).items():
        (root / "engines" / precision).mkdir(parents=True)
        records = []
        for graph in contract.GRAPHS:
            data = f"placeholder {precision} engine {graph}".encode()
            (root / "engines" / precision / f"{graph}.plan").write_bytes(data)
            records.append(EngineRecord(graph, f"engines/{precision}/{graph}.plan", _sha(data), 400_000_000, f"{graph}.onnx",
                                        manifest.files[f"{graph}.onnx"], False, False, ("FP16",), 0, 1.0, ()))
        (root / "engines" / precision / "build.log").write_bytes(b"log\n")
        manifest = record_engines(manifest, precision, records, EngineEnvironment.from_section(env), {},
                                  (f"engines/{precision}/build.log", _sha(b"log\n")), "2026-01-01T00:00:00+00:00")
    manifest.save(root)
    return root


@pytest.fixture
def kit(bundles: types.SimpleNamespace) -> types.SimpleNamespace:
    """The helpers above, for tests (conftest modules are not importable under --import-mode=importlib)."""
    return types.SimpleNamespace(ORIN=dict(ORIN), FakeProbe=FakeProbe, healthy_jetson=healthy_jetson, camera=camera,
                                 fake_cuda_runtime=fake_cuda_runtime, CudaError=CudaError,
                                 write_bundle=functools.partial(write_bundle, bundles))


@pytest.fixture
def doctor(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, list[str]]]:
    """Run `rdvla doctor [BUNDLE] [--json]` on a probe; returns the exit status and the printed lines (or the JSON)."""
    from rdvla.cli import doctor as command

    def run(probe: FakeProbe, bundle: Optional[Path] = None, as_json: bool = False) -> tuple[int, Any]:
        status = command.run(argparse.Namespace(bundle=bundle, json=as_json), probe=probe)
        out = capsys.readouterr().out
        return status, json.loads(out) if as_json else out.splitlines()

    return run
