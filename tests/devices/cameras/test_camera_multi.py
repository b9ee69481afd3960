"""Observations from several cameras: order, freshness and time skew."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest

from rdvla.devices.cameras.base import (
    Camera,
    CameraDisconnectedError,
    CameraConnection,
    CameraStatus,
    CameraTimeoutError,
    Frame,
    StaleFrameError,
)
from rdvla.devices.cameras.multi import MultiCamera, SkewError
from rdvla.devices.cameras.realsense import RealSenseCameraConfig, open_realsense
from rdvla.devices.cameras.realsense.synthetic import SyntheticRealSense, pattern_frame
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_FPS as FPS
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_HEIGHT as HEIGHT
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_WIDTH as WIDTH
from rdvla.devices.cameras.realsense.synthetic import synthetic_timestamp_ms as stamp
from rdvla.devices.testing import FakeClock, wait_until

pytestmark = pytest.mark.timeout(30)


def frame(camera: str, timestamp_ms: float, host_time_s: float, domain: str = "global_time", number: int = 0) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), None, 0.0, timestamp_ms, domain, number, host_time_s, camera)


class ScriptedCamera(Camera):
    """A camera whose latest frame and next frame are set by the test."""

    def __init__(self, role: str, latest: Frame, following: Optional[Frame] = None) -> None:
        super().__init__(role, role)
        self.latest, self.following = latest, following
        self.current_connection = CameraConnection.STREAMING
        self.reads = 0

    @property
    def connection(self) -> CameraConnection:
        return self.current_connection

    def status(self) -> CameraStatus:
        return CameraStatus(self.current_connection, 0, 0, None)

    def connect(self) -> None:
        self.current_connection = CameraConnection.STREAMING

    def disconnect(self) -> None:
        self.current_connection = CameraConnection.DISCONNECTED

    def read(self, timeout_s: float) -> Frame:
        self.reads += 1
        if self.following is None:
            raise CameraTimeoutError(f"camera {self.role}: no new frame")
        self.latest, self.following = self.following, None
        return self.latest

    def read_latest(self, max_age_s: float) -> Frame:
        if self.current_connection != CameraConnection.STREAMING:
            raise CameraDisconnectedError(f"camera {self.role} is {self.current_connection.value}")
        if self.latest.age_s(10.0) > max_age_s:
            raise StaleFrameError(f"camera {self.role}: too old")
        return self.latest


def test_frames_come_in_policy_order() -> None:
    wrist = ScriptedCamera("wrist", frame("w", 1000.0, 10.0))
    third = ScriptedCamera("third_person", frame("t", 1005.0, 10.0))
    cameras = MultiCamera([wrist, third], max_age_s=0.1, max_skew_s=0.02)
    observation = cameras.read(timeout_s=0.1)
    assert observation.roles == ("third_person", "wrist")
    assert [f.camera for f in observation.frames] == ["t", "w"]
    assert observation.skew_s == pytest.approx(0.005)
    assert observation.skew_clock == "device"
    assert observation.age_s(10.05) == pytest.approx(0.05)
    assert [image is f.image for image, f in zip(observation.images, observation.frames)] == [True, True]


def test_lagging_camera_gets_one_chance_to_catch_up() -> None:
    third = ScriptedCamera("third_person", frame("t", 1100.0, 10.0))
    wrist = ScriptedCamera("wrist", frame("w", 1000.0, 10.0), following=frame("w", 1095.0, 10.0))
    observation = MultiCamera([third, wrist], max_age_s=0.1, max_skew_s=0.02).read(timeout_s=0.1)
    assert wrist.reads == 1 and third.reads == 0
    assert observation.skew_s == pytest.approx(0.005)


def test_skew_beyond_the_limit_is_reported() -> None:
    third = ScriptedCamera("third_person", frame("t", 1100.0, 10.0))
    wrist = ScriptedCamera("wrist", frame("w", 1000.0, 10.0), following=frame("w", 1050.0, 10.0))
    with pytest.raises(SkewError, match=r"50\.0 ms apart \(limit 20\.0 ms") as error:
        MultiCamera([third, wrist], max_age_s=0.1, max_skew_s=0.02).read(timeout_s=0.1)
    assert error.value.skew_s == pytest.approx(0.05)
    silent = ScriptedCamera("wrist", frame("w", 1000.0, 10.0))
    with pytest.raises(SkewError, match="wrist gave no newer frame"):
        MultiCamera([ScriptedCamera("third_person", frame("t", 1100.0, 10.0)), silent], max_age_s=0.1, max_skew_s=0.02).read(0.1)


def test_separate_hardware_clocks_fall_back_to_arrival_times() -> None:
    # Hardware clocks of two cameras are unrelated: 5 s apart means nothing, arrival times decide.
    third = ScriptedCamera("third_person", frame("t", 5000.0, 10.00, domain="hardware_clock"))
    wrist = ScriptedCamera("wrist", frame("w", 0.0, 9.99, domain="hardware_clock"))
    observation = MultiCamera([third, wrist], max_age_s=0.1, max_skew_s=0.02).read(timeout_s=0.1)
    assert observation.skew_clock == "host"
    assert observation.skew_s == pytest.approx(0.01)


def test_stale_or_disconnected_camera_fails_the_observation() -> None:
    old = ScriptedCamera("wrist", frame("w", 1000.0, 9.0))
    with pytest.raises(StaleFrameError):
        MultiCamera([ScriptedCamera("third_person", frame("t", 1000.0, 10.0)), old], max_age_s=0.1, max_skew_s=0.02).read(0.1)
    gone = ScriptedCamera("wrist", frame("w", 1000.0, 10.0))
    gone.current_connection = CameraConnection.RECONNECTING
    cameras = MultiCamera([ScriptedCamera("third_person", frame("t", 1000.0, 10.0)), gone], max_age_s=0.1, max_skew_s=0.02)
    with pytest.raises(CameraDisconnectedError):
        cameras.read(0.1)
    assert {c.role: c.connection for c in cameras.cameras} == {"third_person": CameraConnection.STREAMING,
                                                               "wrist": CameraConnection.RECONNECTING}


def test_roles_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        MultiCamera([ScriptedCamera("wrist", frame("a", 0, 0)), ScriptedCamera("wrist", frame("b", 0, 0))], max_age_s=1, max_skew_s=1)


def test_two_software_cameras_skew_and_order(fake_clock: FakeClock) -> None:
    cams = {role: SyntheticRealSense(serial) for role, serial in (("wrist", "200000000001"), ("third_person", "200000000002"))}
    readers = [
        open_realsense(
            RealSenseCameraConfig(serial=cams[role].serial, role=role, width=WIDTH, height=HEIGHT, fps=FPS),
            clock=fake_clock,
            device_finder=cams[role].find,
        )
        for role in ("wrist", "third_person")
    ]
    with MultiCamera(readers, max_age_s=0.1, max_skew_s=0.02) as cameras:
        color, _ = pattern_frame(WIDTH, HEIGHT, 3)
        cams["third_person"].inject(color, None, 3, stamp(3))
        cams["wrist"].inject(color, None, 3, stamp(3) + 5.0)
        assert wait_until(lambda: all(r.status().frames_received == 1 for r in readers))
        observation = cameras.read(timeout_s=0.2)
        assert observation.roles == ("third_person", "wrist")
        assert [f.camera for f in observation.frames] == ["200000000002", "200000000001"]
        assert observation.skew_s == pytest.approx(0.005, abs=1e-6)

        cams["third_person"].inject(color, None, 4, stamp(4))
        cams["wrist"].inject(color, None, 4, stamp(4) + 60.0)
        assert wait_until(lambda: all(r.status().frames_received == 2 for r in readers))
        with pytest.raises(SkewError) as error:
            cameras.read(timeout_s=0.1)
        assert error.value.skew_s == pytest.approx(0.06, abs=1e-6)
