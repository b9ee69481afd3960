"""Everything `rdvla doctor` learns about the machine goes through a `Probe`.

The checks read no system file, start no program and import no library themselves: they ask the
probe. `SystemProbe` answers from this machine, through the functions the runtime itself uses to
import TensorRT, cuda-python and pyrealsense2; tests pass a probe of their own that describes a Jetson
(files, command outputs, modules) without one. Only the bundle, a directory the user names, is
read directly, with `Bundle.open` as `rdvla run` reads it.
"""

from __future__ import annotations

import glob
import importlib
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

from rdvla.devices.cameras.realsense import CameraInfo, find_cameras
from rdvla.devices.cameras.realsense.sdk import import_rs
from rdvla.runtime.backends.tensorrt.cuda_runtime import CudaRuntime
from rdvla.runtime.backends.tensorrt.environment import require_cuda, require_tensorrt

COMMAND_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CommandOutput:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class DiskUsage:
    total: int  # bytes
    free: int  # bytes available to this user


class Probe(Protocol):
    def read_text(self, path: str) -> Optional[str]:
        """The text of a file; None when it is absent or this user may not read it."""

    def glob(self, pattern: str) -> list[str]:
        """The paths matching a shell pattern, sorted; unreadable directories match nothing."""

    def run(self, argv: Sequence[str]) -> Optional[CommandOutput]:
        """Run a program to completion; None when it is not installed."""

    def disk_usage(self, path: str) -> DiskUsage:
        """Space on the filesystem holding `path`; raises OSError."""

    def tensorrt_version(self) -> str:
        """TensorRT's version as the runtime imports it; raises TensorRTUnavailable."""

    def cuda_runtime(self) -> CudaRuntime:
        """cuda-python's runtime API, as the TensorRT backend gets it; raises TensorRTUnavailable."""

    def import_module(self, name: str) -> Any:
        """A module by name; raises ImportError (or OSError for a library that cannot load)."""

    def realsense(self) -> tuple[str, list[CameraInfo]]:
        """pyrealsense2's version and the connected cameras; raises CameraError (RealSenseUnavailableError
        when pyrealsense2 cannot be imported) or the SDK's RuntimeError."""


class SystemProbe:
    """This machine, reached through the same functions the runtime uses to import its libraries."""

    def read_text(self, path: str) -> Optional[str]:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:  # absent, a directory, or root-only (debugfs)
            return None

    def glob(self, pattern: str) -> list[str]:
        return sorted(glob.glob(pattern))

    def run(self, argv: Sequence[str]) -> Optional[CommandOutput]:
        if shutil.which(argv[0]) is None:
            return None
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return CommandOutput(124, "", f"no answer within {COMMAND_TIMEOUT_S:g} s")
        except OSError as exc:
            return CommandOutput(126, "", str(exc))
        return CommandOutput(done.returncode, done.stdout, done.stderr)

    def disk_usage(self, path: str) -> DiskUsage:
        usage = shutil.disk_usage(path)
        return DiskUsage(usage.total, usage.free)

    def tensorrt_version(self) -> str:
        return require_tensorrt()

    def cuda_runtime(self) -> CudaRuntime:
        return require_cuda()

    def import_module(self, name: str) -> Any:
        return importlib.import_module(name)

    def realsense(self) -> tuple[str, list[CameraInfo]]:
        return str(import_rs().__version__), find_cameras()
