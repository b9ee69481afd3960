"""A live RealSense, played by pyrealsense2's software device: frames, freshness, profiles, reconnection."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from rdvla.devices.cameras.base import (
    CameraDisconnectedError,
    CameraNotFoundError,
    CameraConnection,
    CameraTimeoutError,
    StaleFrameError,
    UnsupportedProfileError,
)
from rdvla.devices.cameras.realsense import RealSenseCameraConfig, open_realsense
from rdvla.devices.cameras.realsense.session import RawFrame, pop_pair
from rdvla.devices.cameras.realsense.streaming import Backoff
from rdvla.devices.cameras.realsense.recording import describe_recording
from rdvla.devices.cameras.realsense.sdk import import_rs, recording_extension, sdk_version
from rdvla.devices.cameras.realsense.synthetic import SyntheticRealSense, pattern_frame
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_FPS as FPS
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_HEIGHT as HEIGHT
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_WIDTH as WIDTH
from rdvla.devices.cameras.realsense.synthetic import synthetic_timestamp_ms as stamp
from rdvla.devices.testing import FakeClock, wait_until

pytestmark = pytest.mark.timeout(30)


def live_config(serial: str, **overrides: object) -> RealSenseCameraConfig:
    fields: dict[str, object] = dict(serial=serial, width=WIDTH, height=HEIGHT, fps=FPS, depth=True, align_depth=False)
    fields.update(overrides)
    return RealSenseCameraConfig(**fields)  # type: ignore[arg-type]


def test_frames_round_trip_with_values_and_timestamps(fake_clock: FakeClock) -> None:
    synthetic = SyntheticRealSense("100000000001")
    camera = open_realsense(live_config("100000000001"), clock=fake_clock, device_finder=synthetic.find)
    with camera:
        assert camera.connection == CameraConnection.STREAMING
        for number in range(5):
            color, depth = pattern_frame(WIDTH, HEIGHT, number)
            synthetic.inject(color, depth, number, stamp(number))
            frame = camera.read(timeout_s=2.0)
            assert frame.frame_number == number
            assert frame.timestamp_ms == pytest.approx(stamp(number), abs=1e-3)
            assert frame.timestamp_domain == "global_time"
            np.testing.assert_array_equal(frame.image, color)
            assert frame.depth is not None
            np.testing.assert_array_equal(frame.depth, depth)
            assert frame.depth_scale == pytest.approx(0.001)
            assert frame.host_time_s == fake_clock()
            assert frame.camera == "100000000001"
            fake_clock.advance(1.0 / FPS)
        assert camera.status().frames_received == 5
    assert camera.connection == CameraConnection.DISCONNECTED


def test_depth_is_aligned_to_colour() -> None:
    synthetic = SyntheticRealSense("100000000002")
    camera = open_realsense(live_config("100000000002", align_depth=True), device_finder=synthetic.find)
    with camera:
        color, depth = pattern_frame(WIDTH, HEIGHT, 7)
        synthetic.inject(color, depth, 7, stamp(7))
        frame = camera.read(timeout_s=2.0)
    assert frame.depth is not None and frame.depth.shape == frame.image.shape[:2]
    # Co-located sensors with equal intrinsics: alignment is the identity except at the borders.
    assert np.mean(frame.depth == depth) > 0.9


def test_colour_only_camera_has_no_depth() -> None:
    synthetic = SyntheticRealSense("100000000003")
    camera = open_realsense(live_config("100000000003", depth=False), device_finder=synthetic.find)
    with camera:
        color, _ = pattern_frame(WIDTH, HEIGHT, 1)
        synthetic.inject(color, None, 1, stamp(1))
        frame = camera.read(timeout_s=2.0)
    assert frame.depth is None and frame.depth_scale == 0.0
    np.testing.assert_array_equal(frame.image, color)


def test_stale_frames_are_refused(fake_clock: FakeClock) -> None:
    synthetic = SyntheticRealSense("100000000004")
    camera = open_realsense(live_config("100000000004"), clock=fake_clock, device_finder=synthetic.find)
    with camera:
        with pytest.raises(StaleFrameError, match="no frame received yet"):
            camera.read_latest(max_age_s=0.1)
        color, depth = pattern_frame(WIDTH, HEIGHT, 0)
        synthetic.inject(color, depth, 0, stamp(0))
        assert wait_until(lambda: camera.status().frames_received == 1)
        assert camera.read_latest(max_age_s=0.1).frame_number == 0
        fake_clock.advance(0.25)
        with pytest.raises(StaleFrameError, match="250 ms old"):
            camera.read_latest(max_age_s=0.1)
        assert camera.read_latest(max_age_s=0.3).frame_number == 0
        with pytest.raises(CameraTimeoutError):
            camera.read(timeout_s=0.05)  # nothing newer than what read_latest returned


def test_unsupported_resolution_lists_the_offered_profiles() -> None:
    synthetic = SyntheticRealSense("100000000005", extra_color_fps=(15,))
    camera = open_realsense(live_config("100000000005", width=1280, height=720), device_finder=synthetic.find)
    with pytest.raises(UnsupportedProfileError) as error:
        camera.connect()
    assert "1280x720@30" in str(error.value)
    assert "64x48@15/30 rgb8" in str(error.value)
    assert camera.connection == CameraConnection.DISCONNECTED


def test_unsupported_frame_rate_and_missing_depth() -> None:
    synthetic = SyntheticRealSense("100000000006", with_depth=False)
    with pytest.raises(UnsupportedProfileError, match="64x48@30 rgb8"):
        open_realsense(live_config("100000000006", fps=60), device_finder=synthetic.find).connect()
    with pytest.raises(UnsupportedProfileError, match="no depth stream.*offered: none"):
        open_realsense(live_config("100000000006"), device_finder=synthetic.find).connect()


def test_exposure_is_validated_and_applied() -> None:
    synthetic = SyntheticRealSense("100000000007", exposure_range=(1.0, 10000.0, 1.0, 156.0))
    too_long = open_realsense(live_config("100000000007", exposure=20000.0), device_finder=synthetic.find)
    with pytest.raises(UnsupportedProfileError, match=r"exposure 20000 outside the supported range 1\.\.10000"):
        too_long.connect()
    camera = open_realsense(live_config("100000000007", exposure=300.0), device_finder=synthetic.find)
    with camera:
        rs = import_rs()
        color_sensor = next(s for s in synthetic.device.query_sensors() if s.supports(rs.option.exposure))
        assert color_sensor.get_option(rs.option.exposure) == 300.0


def test_unknown_serial_names_the_connected_cameras() -> None:
    # No camera on the CI machine: the real device lookup must say so clearly.
    camera = open_realsense(RealSenseCameraConfig(serial="999999999999"))
    with pytest.raises(CameraNotFoundError, match="no RealSense camera with serial 999999999999; connected:"):
        camera.connect()


def test_disconnect_is_a_state_and_reconnection_backs_off(fake_clock: FakeClock) -> None:
    synthetic = SyntheticRealSense("100000000008")
    delays: list[float] = []

    def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        fake_clock.advance(seconds)
        time.sleep(0.002)  # let the test thread run

    config = live_config("100000000008", frame_timeout_s=0.5, reconnect_initial_s=0.1, reconnect_max_s=0.4)
    camera = open_realsense(config, clock=fake_clock, sleep=fake_sleep, device_finder=synthetic.find)
    with camera:
        color, depth = pattern_frame(WIDTH, HEIGHT, 0)
        synthetic.inject(color, depth, 0, stamp(0))
        assert camera.read(timeout_s=2.0).frame_number == 0

        synthetic.connected = False  # unplugged: frames stop and the serial is gone
        fake_clock.advance(0.6)
        assert wait_until(lambda: camera.connection == CameraConnection.RECONNECTING)
        assert wait_until(lambda: len(delays) >= 4)
        # The last frame is young enough for any limit, yet a disconnected camera never hands it out.
        with pytest.raises(CameraDisconnectedError, match="disconnected, reconnecting"):
            camera.read_latest(max_age_s=100.0)
        with pytest.raises(CameraDisconnectedError):
            camera.read(timeout_s=0.05)
        assert delays[:4] == [0.1, 0.2, 0.4, 0.4]
        status = camera.status()
        assert status.reconnect_attempts >= 3
        assert status.last_error is not None and "no RealSense camera with serial 100000000008" in status.last_error

        synthetic.connected = True  # plugged back in
        assert wait_until(lambda: camera.connection == CameraConnection.STREAMING)
        color, depth = pattern_frame(WIDTH, HEIGHT, 1)
        synthetic.inject(color, depth, 1, stamp(1))
        frame = camera.read(timeout_s=2.0)
        assert frame.frame_number == 1
        np.testing.assert_array_equal(frame.image, color)
        assert camera.status().reconnect_attempts == 0

        delays.clear()
        synthetic.connected = False
        fake_clock.advance(0.6)  # lost again: the backoff starts over from its first delay
        assert wait_until(lambda: camera.connection == CameraConnection.RECONNECTING)
        assert wait_until(lambda: len(delays) >= 1)
        assert delays[0] == 0.1


def test_pairing_drops_orphans_and_keeps_order() -> None:
    def raw(stamp_ms: float) -> RawFrame:
        return RawFrame(0.0, stamp_ms, stamp_ms)

    colors = deque([raw(0.0), raw(33.0), raw(66.0), raw(100.0)])
    depths = deque([raw(-40.0), raw(1.0), raw(65.0), raw(99.0)])
    pairs = []
    while (pair := pop_pair(colors, depths, tolerance_ms=16.0)) is not None:
        pairs.append((pair[0].timestamp_ms, pair[1].timestamp_ms if pair[1] else None))
    # depth at -40 has no colour partner; colour at 33 has no depth partner.
    assert pairs == [(0.0, 1.0), (66.0, 65.0), (100.0, 99.0)]
    assert pop_pair(deque([raw(5.0)]), None, 16.0) is not None


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.next_delay() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next_delay() == 0.1


def test_config_rejects_ambiguous_sources() -> None:
    with pytest.raises(ValueError, match="exactly one of serial"):
        RealSenseCameraConfig()
    with pytest.raises(ValueError, match="exactly one of serial"):
        RealSenseCameraConfig(serial="1", recording="a.db3")
    with pytest.raises(ValueError, match="record_to applies to live cameras"):
        RealSenseCameraConfig(recording="a.db3", record_to="b.db3")


def test_recording_survives_a_reconnection_in_parts(fake_clock: FakeClock, tmp_path: Path) -> None:
    synthetic = SyntheticRealSense("100000000010")
    target = tmp_path / f"live{recording_extension(sdk_version())}"
    config = live_config("100000000010", depth=False, frame_timeout_s=0.5, record_to=str(target))
    backoff_over = threading.Event()
    camera = open_realsense(config, clock=fake_clock, sleep=lambda _: backoff_over.wait(5.0), device_finder=synthetic.find)
    with camera:
        for number in range(3):
            synthetic.inject(pattern_frame(WIDTH, HEIGHT, number)[0], None, number, stamp(number))
            camera.read(timeout_s=2.0)
        fake_clock.advance(0.6)
        assert wait_until(lambda: camera.connection == CameraConnection.RECONNECTING)
        backoff_over.set()
        assert wait_until(lambda: camera.connection == CameraConnection.STREAMING)
        for number in range(3, 5):
            synthetic.inject(pattern_frame(WIDTH, HEIGHT, number)[0], None, number, stamp(number))
            camera.read(timeout_s=2.0)
    first, second = describe_recording(target), describe_recording(target.with_name(f"live.part1{target.suffix}"))
    assert (first.frame_count, second.frame_count) == (3, 2)


def test_a_new_stream_gets_time_for_its_first_frame(fake_clock: FakeClock) -> None:
    synthetic = SyntheticRealSense("100000000011")
    camera = open_realsense(live_config("100000000011", frame_timeout_s=0.5), clock=fake_clock, device_finder=synthetic.find)
    with camera:
        fake_clock.advance(2.0)  # silent, but a camera just opened may be slow to start
        time.sleep(0.15)
        assert camera.connection == CameraConnection.STREAMING
        fake_clock.advance(3.5)
        assert wait_until(lambda: camera.connection == CameraConnection.RECONNECTING)
        assert "no frame for 5.50 s" in (camera.status().last_error or "")
