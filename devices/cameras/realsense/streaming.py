"""A RealSense that streams: a live camera, or a recording played at its recorded pace.

A capture thread pairs the queued frames and keeps only the newest. Frame silence beyond
``frame_timeout_s`` means a live camera is gone: it reopens the device by serial with exponential
backoff (connection RECONNECTING). A recording that stalls has failed; one that reaches its end has
ENDED.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from rdvla.devices.cameras.base import CameraConnection, CameraError, CameraTimeoutError, Clock, Frame, StaleFrameError
from rdvla.devices.cameras.realsense.camera import POLL_S, DeviceFinder, RealSenseCamera
from rdvla.devices.cameras.realsense.config import RealSenseCameraConfig
from rdvla.devices.cameras.realsense.sdk import one_line
from rdvla.devices.cameras.realsense.session import pop_pair

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT_S = 5.0  # a camera just opened may take this long to start (auto exposure, USB)


class Backoff:
    """Delays between reconnection attempts: initial, doubling, capped."""

    def __init__(self, initial_s: float, max_s: float, factor: float = 2.0) -> None:
        self.initial_s, self.max_s, self.factor = initial_s, max_s, factor
        self._next = initial_s

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


class StreamingRealSense(RealSenseCamera):
    """The newest frame wins; reads wait for a frame newer than the last one returned."""

    queue_limit = 4  # raw frames kept per stream: only the newest matter

    def __init__(self, config: RealSenseCameraConfig, *, clock: Clock = time.monotonic,
                 sleep: Optional[Callable[[float], object]] = None, device_finder: Optional[DeviceFinder] = None) -> None:
        super().__init__(config, clock=clock, device_finder=device_finder)
        self._sleep = sleep  # None: wait on the stop event, so disconnect() interrupts a backoff
        self._backoff = Backoff(config.reconnect_initial_s, config.reconnect_max_s)
        self._latest: Optional[Frame] = None
        self._latest_seq = 0
        self._returned_seq = 0
        self._last_activity = 0.0

    def _on_connected(self) -> None:
        self._latest = None
        self._latest_seq = self._returned_seq = 0
        self._last_activity = self.clock()
        self._backoff.reset()

    def _work(self) -> None:
        while not self._stop.is_set():
            session = self._session
            if session is None:
                self._reopen()
                continue
            with self._cond:
                pair = pop_pair(session.colors, session.depths, session.tolerance_ms)
                if pair is None and not session.stopped:
                    self._cond.wait(POLL_S)
                    pair = pop_pair(session.colors, session.depths, session.tolerance_ms)
            if pair is not None:
                try:
                    frame = self._frame(session, pair[0], pair[1], pair[0].host_time_s)
                except RuntimeError as exc:
                    self._lose_stream(f"SDK error while reading frames: {one_line(exc)}")
                    continue
                with self._cond:
                    self._latest = frame
                    self._latest_seq += 1
                    self._frames_received += 1
                    self._last_activity = self.clock()
                    session.delivered += 1
                    self._cond.notify_all()
            elif session.playback is not None:
                if session.stopped:
                    self._set_connection(CameraConnection.ENDED, "the recording has no more frames")
                    return
            else:
                silent = self.clock() - self._last_activity
                allowed = self.config.frame_timeout_s if session.delivered else max(self.config.frame_timeout_s, FIRST_FRAME_TIMEOUT_S)
                if silent > allowed:
                    self._lose_stream(f"no frame for {silent:.2f} s")

    def _lose_stream(self, reason: str) -> None:
        log.warning("camera %s: stream lost: %s", self.name, reason)
        self._close_session()
        if self.config.recording is not None:  # a file does not come back
            self._set_connection(CameraConnection.FAILED, reason)
            self._stop.set()
            return
        with self._cond:
            self._attempts = 0
        self._set_connection(CameraConnection.RECONNECTING, reason)

    def _reopen(self) -> None:
        delay = self._backoff.next_delay()
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self._stop.wait(delay)
        if self._stop.is_set():
            return
        with self._cond:
            self._attempts += 1
            attempt = self._attempts
        try:
            session = self._open_session()
        except CameraError as exc:
            with self._cond:
                self._last_error = one_line(exc)
            log.info("camera %s: reconnection attempt %d failed: %s", self.name, attempt, one_line(exc))
            return
        with self._cond:
            self._session = session
            self._last_activity = self.clock()
            self._attempts = 0
        self._backoff.reset()
        self._set_connection(CameraConnection.STREAMING)

    def read(self, timeout_s: float) -> Frame:
        with self._cond:
            self._cond.wait_for(lambda: self._latest_seq > self._returned_seq or self._connection != CameraConnection.STREAMING, timeout_s)
            self._check_streaming()
            if self._latest_seq == self._returned_seq or self._latest is None:
                raise CameraTimeoutError(f"camera {self.name}: no new frame within {timeout_s * 1000:.0f} ms")
            self._returned_seq = self._latest_seq
            return self._latest

    def read_latest(self, max_age_s: float) -> Frame:
        with self._cond:
            self._check_streaming()
            frame = self._latest
            if frame is None:
                raise StaleFrameError(f"camera {self.name}: no frame received yet")
            age = frame.age_s(self.clock())
            if age > max_age_s:
                raise StaleFrameError(
                    f"camera {self.name}: newest frame is {age * 1000:.0f} ms old (limit {max_age_s * 1000:.0f} ms)"
                )
            self._returned_seq = self._latest_seq
            return frame
