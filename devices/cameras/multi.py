"""Several cameras read as one observation: fresh frames, in policy order, taken close together in time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rdvla.devices.cameras.base import (
    HOST_COMPARABLE_DOMAINS,
    Camera,
    CameraError,
    CameraTimeoutError,
    Frame,
    role_rank,
)

log = logging.getLogger(__name__)


class SkewError(CameraError):
    """The cameras' frames are further apart in time than allowed, even after waiting for the laggard."""

    def __init__(self, message: str, skew_s: float) -> None:
        super().__init__(message)
        self.skew_s = skew_s


@dataclass(frozen=True)
class Observation:
    frames: tuple[Frame, ...]  # in camera order: third-person first, then wrist
    roles: tuple[str, ...]
    skew_s: float  # spread of the frames' capture times
    skew_clock: str  # "device" (comparable device timestamps) or "host" (arrival times)

    @property
    def images(self) -> list[np.ndarray]:
        return [frame.image for frame in self.frames]

    def age_s(self, now_s: float) -> float:
        """Age of the oldest frame (camera clock), for latency accounting."""
        return max(frame.age_s(now_s) for frame in self.frames)


def capture_times(frames: Sequence[Frame]) -> tuple[list[float], str]:
    """Seconds on a clock shared by all frames: device timestamps when they are host-synchronised
    (global or system time), otherwise the host arrival times (separate hardware clocks cannot be compared)."""
    if all(frame.timestamp_domain in HOST_COMPARABLE_DOMAINS for frame in frames):
        return [frame.timestamp_ms / 1000.0 for frame in frames], "device"
    return [frame.host_time_s for frame in frames], "host"


class MultiCamera:
    """Reads every camera and checks that the frames are fresh and taken together."""

    def __init__(self, cameras: Sequence[Camera], *, max_age_s: float, max_skew_s: float) -> None:
        if not cameras:
            raise ValueError("MultiCamera needs at least one camera")
        roles = [camera.role for camera in cameras]
        if len(set(roles)) != len(roles):
            raise ValueError(f"camera roles must be unique, got {roles}")
        self.cameras = tuple(sorted(cameras, key=lambda camera: role_rank(camera.role)))
        self.max_age_s = max_age_s
        self.max_skew_s = max_skew_s

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(camera.role for camera in self.cameras)

    def connect(self) -> None:
        connected: list[Camera] = []
        try:
            for camera in self.cameras:
                camera.connect()
                connected.append(camera)
        except BaseException:
            for camera in connected:  # leave nothing half-open behind a failed start
                camera.disconnect()
            raise

    def disconnect(self) -> None:
        for camera in self.cameras:
            camera.disconnect()

    def __enter__(self) -> "MultiCamera":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def read(self, timeout_s: float) -> Observation:
        """One fresh frame per camera, within max_skew_s of each other.

        Frames older than max_age_s or a camera that is not streaming raise at once (CameraError
        subclasses naming the camera). When the skew is too large, each camera that lags behind the
        newest frame waits (up to timeout_s) for its next frame once; a skew still too large then
        raises SkewError.
        """
        frames = [camera.read_latest(self.max_age_s) for camera in self.cameras]
        skew, clock = self._skew(frames)
        if skew <= self.max_skew_s:
            return self._observation(frames, skew, clock)
        times, _ = capture_times(frames)
        newest = max(times)
        for index, camera in enumerate(self.cameras):
            if newest - times[index] > self.max_skew_s:
                try:
                    frames[index] = camera.read(timeout_s)
                except CameraTimeoutError:
                    raise SkewError(
                        f"cameras {skew * 1000:.1f} ms apart (limit {self.max_skew_s * 1000:.1f} ms) and {camera.role} "
                        f"gave no newer frame within {timeout_s * 1000:.0f} ms",
                        skew,
                    ) from None
        skew, clock = self._skew(frames)
        if skew > self.max_skew_s:
            detail = ", ".join(f"{c.role}={t:.3f}" for c, t in zip(self.cameras, capture_times(frames)[0]))
            raise SkewError(
                f"cameras {skew * 1000:.1f} ms apart (limit {self.max_skew_s * 1000:.1f} ms; {clock} times {detail})", skew
            )
        return self._observation(frames, skew, clock)

    def _skew(self, frames: Sequence[Frame]) -> tuple[float, str]:
        times, clock = capture_times(frames)
        return max(times) - min(times), clock

    def _observation(self, frames: Sequence[Frame], skew: float, clock: str) -> Observation:
        return Observation(tuple(frames), self.roles, skew, clock)

