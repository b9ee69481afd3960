"""The one place that imports pyrealsense2 (lazily) and turns its failures into one-line CameraErrors."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from rdvla.devices.cameras.base import CameraError, RecordingError

# librealsense 2.58 switched its recorder to ROS 2 sqlite files; older SDKs write ROS 1 bags.
DB3_SINCE = (2, 58)
RECORDING_EXTENSIONS = (".db3", ".bag")


class RealSenseUnavailableError(CameraError):
    """pyrealsense2 is missing or cannot be imported."""


def import_rs() -> ModuleType:
    try:
        import pyrealsense2 as rs  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        if "libusb" in str(exc):
            raise RealSenseUnavailableError(
                f"pyrealsense2 cannot load the system libusb ({exc}); install it, e.g. apt-get install libusb-1.0-0"
            ) from exc
        raise RealSenseUnavailableError(
            "pyrealsense2 is not installed: pip install 'rdvla[realsense]' "
            "(on a Jetson, build librealsense with its Python bindings from source)"
        ) from exc
    return rs


def parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def sdk_version() -> tuple[int, ...]:
    return parse_version(import_rs().__version__)


def recording_extension(version: tuple[int, ...]) -> str:
    """The file extension the SDK's recorder of this version insists on."""
    return ".db3" if version[:2] >= DB3_SINCE else ".bag"


def check_record_path(path: str | os.PathLike[str]) -> Path:
    """A recording target with the extension this SDK writes; raises RecordingError otherwise."""
    target = Path(path)
    version = sdk_version()
    wanted = recording_extension(version)
    if target.suffix != wanted:
        raise RecordingError(
            f"pyrealsense2 {'.'.join(map(str, version))} records {wanted} files; "
            f"use {target.with_suffix(wanted).name} instead of {target.name}"
        )
    if not target.parent.is_dir():
        raise RecordingError(f"cannot record to {target}: directory {target.parent} does not exist")
    return target


def load_recording(rs: ModuleType, context: Any, path: str | os.PathLike[str]) -> Any:
    """Open a recording as a playback device, with a clear error for every way a file can be bad."""
    source = Path(path)
    if not source.exists():
        raise RecordingError(f"recording not found: {source}")
    if not source.is_file():
        raise RecordingError(f"recording is not a file: {source}")
    if source.suffix not in RECORDING_EXTENSIONS:
        raise RecordingError(f"{source.name}: not a RealSense recording (expected a .db3 or .bag file)")
    if source.stat().st_size == 0:
        raise RecordingError(f"recording is empty (0 bytes): {source}")
    if source.suffix == ".db3" and parse_version(rs.__version__)[:2] < DB3_SINCE:
        raise RecordingError(f"{source.name}: .db3 recordings need pyrealsense2 >= 2.58 (this is {rs.__version__})")
    try:
        return context.load_device(str(source))
    except RuntimeError as exc:
        raise RecordingError(f"cannot read recording {source} (corrupt or truncated?): {one_line(exc)}") from exc


def camera_info(rs: ModuleType, device: Any, key: str, default: str = "unknown") -> str:
    info = getattr(rs.camera_info, key)
    return device.get_info(info) if device.supports(info) else default


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
