"""A recording read frame by frame: every read returns the next recorded frame, so two runs over
one file see the same frames (desk runs, calibration, tests).

The file stays paused until every sensor has started (or its first frames would go to nobody), and
a flow-control thread pauses it again whenever the reader falls behind, since the SDK would
otherwise read the whole file into memory as fast as the disk allows.
"""

from __future__ import annotations

import logging
import time

from rdvla.devices.cameras.base import CameraConnection, CameraEndedError, CameraTimeoutError, Frame
from rdvla.devices.cameras.realsense.camera import POLL_S, RealSenseCamera
from rdvla.devices.cameras.realsense.session import pop_pair

log = logging.getLogger(__name__)

# Pause the file when this many framesets wait unread, resume below LOW.
PLAYBACK_HIGH, PLAYBACK_LOW = 16, 4


class SteppedPlayback(RealSenseCamera):
    """Each read consumes the next recorded frame; nothing is dropped."""

    queue_limit = None

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait(POLL_S)
                session = self._session
                if session is None or session.stopped:
                    return
                waiting = len(session.colors)
                action = None
                if waiting >= PLAYBACK_HIGH and not session.paused:
                    action, session.paused = "pause", True
                elif waiting <= PLAYBACK_LOW and session.paused:
                    action, session.paused = "resume", False
            if action is not None and session.playback is not None:
                log.debug("camera %s: %s playback (%d framesets unread)", self.name, action, waiting)
                getattr(session.playback, action)()

    def read(self, timeout_s: float) -> Frame:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check_streaming()
                session = self._session
                assert session is not None
                pair = pop_pair(session.colors, session.depths, session.tolerance_ms)
                if pair is not None:
                    self._cond.notify_all()  # the flow-control thread may resume the file
                    break
                if session.stopped:
                    self._set_connection(CameraConnection.ENDED, f"the recording ended after {self._frames_received} frames")
                    raise CameraEndedError(f"camera {self.name}: the recording has no more frames")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CameraTimeoutError(f"camera {self.name}: no recorded frame within {timeout_s * 1000:.0f} ms")
                self._cond.wait(remaining)
            self._frames_received += 1
        return self._frame(session, pair[0], pair[1], self.clock())

    def read_latest(self, max_age_s: float) -> Frame:
        # Frame by frame, "latest" is the next recorded frame: each control step consumes one.
        return self.read(self.config.frame_timeout_s)
