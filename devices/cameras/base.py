"""What every camera offers the control loop: frames, a connection status, and reads with a freshness guarantee.

Two kinds of time appear here and are never mixed:
* ages and staleness use the camera's injectable ``clock`` (seconds, ``time.monotonic`` by default),
  so tests can move time by hand;
* blocking waits (``read(timeout_s)``) are real-time waits on a condition variable.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

import numpy as np

Clock = Callable[[], float]
CT = TypeVar("CT", bound="Camera")

# RD-VLA feeds its images in this order (third-person first, then wrist); unknown roles sort last.
ROLE_ORDER: tuple[str, ...] = ("third_person", "wrist")

# Timestamp domains whose values are on the host's wall clock, so two cameras can be compared.
HOST_COMPARABLE_DOMAINS = frozenset({"global_time", "system_time"})


class CameraConnection(enum.Enum):
    DISCONNECTED = "disconnected"  # not connected yet, or closed by the caller
    STREAMING = "streaming"  # sensors started; frames flow
    RECONNECTING = "reconnecting"  # frames stopped; trying to reopen the device with backoff
    ENDED = "ended"  # a recording played to its end
    FAILED = "failed"  # cannot recover (playback error); see CameraStatus.last_error


class CameraError(RuntimeError):
    """Base class of every camera failure; the message is meant for the user, on one line."""


class CameraNotFoundError(CameraError):
    """No connected camera has the requested serial number."""


class UnsupportedProfileError(CameraError):
    """Resolution, frame rate, stream or exposure not offered by the device (message lists what is)."""


class RecordingError(CameraError):
    """A recording is missing, unreadable, truncated or recorded in a format this SDK cannot write/read."""


class CameraTimeoutError(CameraError):
    """No new frame arrived within the requested time."""


class StaleFrameError(CameraError):
    """The newest frame is older than the caller allows (or there is none yet)."""


class CameraDisconnectedError(CameraError):
    """The camera is not streaming (reconnecting, failed or closed); no frame is returned."""


class CameraEndedError(CameraDisconnectedError):
    """A recording has no more frames."""


@dataclass(frozen=True)
class Frame:
    """One colour image (RGB, HxWx3 uint8), optionally with depth, and where it came from in time."""

    image: np.ndarray
    depth: Optional[np.ndarray]  # HxW uint16 in units of depth_scale metres; aligned to image if asked
    depth_scale: float  # metres per depth unit (0.0 when there is no depth)
    timestamp_ms: float  # device timestamp of the colour frame, in timestamp_domain
    timestamp_domain: str  # "hardware_clock", "global_time" or "system_time"
    frame_number: int  # colour frame counter of the device
    host_time_s: float  # camera clock when the frame reached the host
    camera: str  # serial (or recording name) of the source

    def age_s(self, now_s: float) -> float:
        return now_s - self.host_time_s


@dataclass(frozen=True)
class CameraStatus:
    connection: CameraConnection
    frames_received: int
    reconnect_attempts: int  # attempts since the stream was last healthy
    last_error: Optional[str]


class Camera(ABC):
    """A source of frames: a live camera, or a recording standing in for one."""

    def __init__(self, name: str, role: str, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.role = role
        self.clock = clock

    @property
    @abstractmethod
    def connection(self) -> CameraConnection: ...

    @abstractmethod
    def status(self) -> CameraStatus: ...

    @abstractmethod
    def connect(self) -> None:
        """Open the device and start streaming; raises a CameraError naming what is wrong."""

    @abstractmethod
    def disconnect(self) -> None:
        """Stop streaming and release the device (and finish any recording). Idempotent."""

    @abstractmethod
    def read(self, timeout_s: float) -> Frame:
        """The next frame newer than the last one returned by read/read_latest, waiting up to timeout_s."""

    @abstractmethod
    def read_latest(self, max_age_s: float) -> Frame:
        """The newest frame if it is at most max_age_s old; otherwise StaleFrameError.

        Raises CameraDisconnectedError whenever the camera is not streaming, however fresh the last
        frame may look: a disconnected camera never hands out its last frame.
        """

    def __enter__(self: CT) -> CT:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


def role_rank(role: str) -> int:
    return ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER)
