"""Intel RealSense cameras through pyrealsense2, which is imported only when a camera is opened.

config      what a camera is asked for (a live camera by serial, or a recording in its place)
profiles    connected devices, the stream profiles they offer, exposure
session     one opening of a device: started sensors, frames paired by timestamp and converted
camera      the life cycle every RealSense camera shares
streaming   a live camera, or a recording at its recorded pace: the newest frame wins
stepped     a recording frame by frame (deterministic desk runs)
recording   what is inside a recording file
synthetic   a RealSense made of software, for tests and demos
sdk         the one place that imports pyrealsense2
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

from rdvla.devices.cameras.base import Clock
from rdvla.devices.cameras.realsense.camera import DeviceFinder, RealSenseCamera
from rdvla.devices.cameras.realsense.config import RealSenseCameraConfig
from rdvla.devices.cameras.realsense.profiles import CameraInfo, find_cameras
from rdvla.devices.cameras.realsense.sdk import RECORDING_EXTENSIONS, RealSenseUnavailableError, recording_extension, sdk_version
from rdvla.devices.cameras.realsense.stepped import SteppedPlayback
from rdvla.devices.cameras.realsense.streaming import StreamingRealSense
from rdvla.devices.cameras.registry import CameraType, register_camera_type

__all__ = ["CameraInfo", "RealSenseCamera", "RealSenseCameraConfig", "RealSenseUnavailableError", "find_cameras",
           "open_realsense"]


def open_realsense(config: RealSenseCameraConfig, *, clock: Clock = time.monotonic, sleep: Optional[Callable[[float], object]] = None,
                   device_finder: Optional[DeviceFinder] = None) -> RealSenseCamera:
    """The camera a config asks for, not yet connected: frame by frame for a recording with
    ``real_time=False``, streaming otherwise. ``sleep`` replaces the reconnection backoff's wait (tests)."""
    if config.recording is not None and not config.real_time:
        return SteppedPlayback(config, clock=clock, device_finder=device_finder)
    return StreamingRealSense(config, clock=clock, sleep=sleep, device_finder=device_finder)


register_camera_type(CameraType(
    name="realsense",
    config=RealSenseCameraConfig,
    open=open_realsense,
    recording_suffixes=RECORDING_EXTENSIONS,
    recording_suffix=lambda: recording_extension(sdk_version()),
    replay=lambda recording, role, real_time: RealSenseCameraConfig(recording=str(recording), role=role, real_time=real_time),
    record_into=lambda config, target: dataclasses.replace(config, record_to=str(target)),
    describe=lambda config: f"live camera {config.serial}",
))
