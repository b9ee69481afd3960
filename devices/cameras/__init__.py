"""Cameras: the Camera interface, camera types by name (registry), RealSense (one folder), and
multi-camera observations.

Nothing here imports pyrealsense2 at import time; it is loaded when a camera is opened.
"""

from rdvla.devices.cameras.base import (
    Camera,
    CameraDisconnectedError,
    CameraEndedError,
    CameraError,
    CameraNotFoundError,
    CameraConnection,
    CameraStatus,
    CameraTimeoutError,
    Frame,
    RecordingError,
    StaleFrameError,
    UnsupportedProfileError,
)
from rdvla.devices.cameras.multi import MultiCamera, Observation, SkewError
from rdvla.devices.cameras.realsense import (
    CameraInfo,
    RealSenseCamera,
    RealSenseCameraConfig,
    RealSenseUnavailableError,
    find_cameras,
    open_realsense,
)
from rdvla.devices.cameras.realsense.recording import RecordingInfo, describe_recording

__all__ = [
    "Camera",
    "CameraDisconnectedError",
    "CameraEndedError",
    "CameraError",
    "CameraInfo",
    "CameraNotFoundError",
    "CameraConnection",
    "CameraStatus",
    "CameraTimeoutError",
    "Frame",
    "MultiCamera",
    "Observation",
    "RealSenseCamera",
    "RealSenseCameraConfig",
    "RealSenseUnavailableError",
    "RecordingError",
    "RecordingInfo",
    "SkewError",
    "StaleFrameError",
    "UnsupportedProfileError",
    "describe_recording",
    "find_cameras",
    "open_realsense",
]
