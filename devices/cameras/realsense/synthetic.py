"""A RealSense made of software: pyrealsense2's software_device with a colour and a depth sensor.

Frames are injected by the caller and flow through the SDK exactly as a camera's would (sensor
callbacks, the SDK recorder, alignment), so the camera code, recordings and playback can be
exercised on a machine without a camera, and demos can make recordings without hardware.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from rdvla.devices.cameras.base import CameraNotFoundError
from rdvla.devices.cameras.realsense.config import RealSenseCameraConfig
from rdvla.devices.cameras.realsense.sdk import import_rs
from rdvla.devices.cameras.realsense.streaming import StreamingRealSense

DEPTH_UNITS_M = 0.001
DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FPS = 64, 48, 30
SCENE_WIDTH, SCENE_HEIGHT, SCENE_FPS = 128, 96, 30  # the demo's recordings
GLOBAL_TIME_START_MS = 1.7e12  # host-synchronised device timestamps are milliseconds since the epoch


def synthetic_timestamp_ms(number: int, fps: int = DEFAULT_FPS) -> float:
    """The global-time timestamp of frame ``number`` of a camera running at ``fps``."""
    return GLOBAL_TIME_START_MS + number * 1000.0 / fps


class SyntheticRealSense:
    """One software camera. ``find`` can stand in for the live-device lookup of RealSenseCamera."""

    def __init__(
        self,
        serial: str = "000000000001",
        *,
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
        fps: int = DEFAULT_FPS,
        extra_color_fps: Sequence[int] = (),
        exposure_range: tuple[float, float, float, float] = (1.0, 10000.0, 1.0, 156.0),
        name: str = "Synthetic RealSense",
        firmware: str = "5.0.0.0",
        with_depth: bool = True,
    ) -> None:
        rs = import_rs()
        self._rs = rs
        self.serial = serial
        self.width, self.height, self.fps = width, height, fps
        self.connected = True  # set False to make find() behave as if the camera were unplugged
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, name)
        self.device.register_info(rs.camera_info.firmware_version, firmware)

        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = width, height
        intrinsics.ppx, intrinsics.ppy = width / 2, height / 2
        intrinsics.fx = intrinsics.fy = float(width)
        intrinsics.model = rs.distortion.none
        intrinsics.coeffs = [0.0] * 5

        self._color_sensor = self.device.add_sensor("RGB Camera")
        self._color_profile = self._add_stream(self._color_sensor, rs.stream.color, rs.format.rgb8, 3, fps, 1, intrinsics)
        for uid, extra in enumerate(extra_color_fps, start=10):
            self._add_stream(self._color_sensor, rs.stream.color, rs.format.rgb8, 3, extra, uid, intrinsics)
        allowed = rs.option_range()  # set by name: the 4-argument constructor swaps step and default
        allowed.min, allowed.max, allowed.step, allowed.default = exposure_range
        self._color_sensor.add_option(rs.option.exposure, allowed, True)

        self._depth_sensor: Optional[Any] = None
        self._depth_profile: Optional[Any] = None
        if with_depth:
            self._depth_sensor = self.device.add_sensor("Stereo Module")
            self._depth_profile = self._add_stream(self._depth_sensor, rs.stream.depth, rs.format.z16, 2, fps, 0, intrinsics)
            self._depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS_M)
            # Co-located sensors: alignment then maps every depth pixel onto the same colour pixel.
            identity = rs.extrinsics()
            identity.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            identity.translation = [0.0, 0.0, 0.0]
            self._depth_profile.register_extrinsics_to(self._color_profile, identity)
        self.device.create_matcher(rs.matchers.default)

    def _add_stream(self, sensor: Any, stream: Any, fmt: Any, bpp: int, fps: int, uid: int, intrinsics: Any) -> Any:
        spec = self._rs.video_stream()
        spec.type, spec.index, spec.uid = stream, 0, uid
        spec.width, spec.height, spec.fps, spec.bpp, spec.fmt = self.width, self.height, fps, bpp, fmt
        spec.intrinsics = intrinsics
        return sensor.add_video_stream(spec)

    def find(self, serial: str) -> Any:
        if not self.connected or serial != self.serial:
            raise CameraNotFoundError(f"no RealSense camera with serial {serial}")
        return self.device

    def inject(
        self,
        color: np.ndarray,
        depth: Optional[np.ndarray],
        frame_number: int,
        timestamp_ms: float,
        domain: str = "global_time",
    ) -> None:
        """Hand one colour frame (HxWx3 uint8 RGB) and, if given, one depth frame (HxW uint16) to the SDK."""
        self._push(self._color_sensor, self._color_profile, color, np.uint8, 3, frame_number, timestamp_ms, domain)
        if depth is not None:
            if self._depth_sensor is None:
                raise ValueError("this synthetic camera was made without a depth sensor")
            self._push(self._depth_sensor, self._depth_profile, depth, np.uint16, 2, frame_number, timestamp_ms, domain)

    def _push(
        self, sensor: Any, profile: Any, pixels: np.ndarray, dtype: type, bpp: int, number: int, stamp: float, domain: str
    ) -> None:
        expected = (self.height, self.width, 3) if bpp == 3 else (self.height, self.width)
        if pixels.shape != expected or pixels.dtype != dtype:
            raise ValueError(f"expected {np.dtype(dtype).name} pixels of shape {expected}, got {pixels.dtype} {pixels.shape}")
        frame = self._rs.software_video_frame()
        frame.pixels = np.ascontiguousarray(pixels)
        frame.bpp = bpp
        frame.stride = self.width * bpp
        frame.timestamp = float(stamp)
        frame.domain = getattr(self._rs.timestamp_domain, domain)
        frame.frame_number = int(number)
        frame.profile = profile.as_video_stream_profile()
        sensor.on_video_frame(frame)


def pattern_frame(width: int, height: int, number: int) -> tuple[np.ndarray, np.ndarray]:
    """A colour and a depth image of seeded noise, different for every frame number (incompressible,
    so a round trip through a recording proves it lossless)."""
    rng = np.random.default_rng(number)
    color = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    depth = rng.integers(300, 10_000, size=(height, width), dtype=np.uint16)  # 0.3 m to 10 m, never 0 (invalid)
    return color, depth


def write_synthetic_recording(
    path: str | os.PathLike[str],
    frames: Iterable[tuple[np.ndarray, Optional[np.ndarray], float]],
    *,
    serial: str = "000000000001",
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
    fps: int = DEFAULT_FPS,
    depth: bool = True,
) -> int:
    """Record (colour, depth, timestamp_ms) triples with the SDK recorder through a live camera; returns the count."""
    camera = SyntheticRealSense(serial, width=width, height=height, fps=fps, with_depth=depth)
    config = RealSenseCameraConfig(serial=serial, width=width, height=height, fps=fps, depth=depth, record_to=str(path))
    recorder = StreamingRealSense(config, device_finder=camera.find)
    count = 0
    recorder.connect()
    try:
        for count, (color, depth_image, stamp) in enumerate(frames, start=1):
            camera.inject(color, depth_image if depth else None, count - 1, stamp)
    finally:
        recorder.disconnect()
    return count


def scene(role: str, count: int, width: int = SCENE_WIDTH, height: int = SCENE_HEIGHT) -> Iterator[np.ndarray]:
    """Frames of a coloured disc moving over a gradient: something for the vision towers to see change."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    tint = (1.0, 0.6, 0.3) if role == "third_person" else (0.3, 0.7, 1.0)
    background = np.stack([80 + 60 * t * (x / width + y / height) for t in tint], -1)
    radius = 0.15 * min(width, height)
    for n in range(count):
        phase = 2 * np.pi * n / 120
        cx = width * (0.5 + 0.3 * np.cos(phase))
        cy = height * (0.5 + 0.3 * np.sin(2 * phase))
        disc = ((x - cx) ** 2 + (y - cy) ** 2 <= radius**2)[..., None]
        yield np.where(disc, np.array([230.0, 40.0, 40.0]), background).astype(np.uint8)


def record_scene(path: Path, role: str, count: int, *, width: int = SCENE_WIDTH, height: int = SCENE_HEIGHT) -> int:
    """A colour-only recording of `count` frames of the scene of `role` (third_person or wrist); returns the count."""
    frames = ((image, None, synthetic_timestamp_ms(n, SCENE_FPS)) for n, image in enumerate(scene(role, count, width, height)))
    return write_synthetic_recording(path, frames, width=width, height=height, fps=SCENE_FPS, depth=False)
