"""Recordings made with the software device: description, playback through RealSenseCamera, bad files.

The SDK may drop the first framesets of a playback while it starts its streams (RealSenseCamera
pauses the file until every sensor is started, and no loss has been seen since, but the SDK does
not promise it). "Frames in order" is therefore asserted as: frame numbers strictly increasing,
at least N-3 of N frames including the last, and every frame's pixels and timestamp equal to
what was injected under its frame number. Determinism is asserted exactly: two playbacks of one
file give identical frame sequences.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from rdvla.devices.cameras.base import CameraEndedError, CameraConnection, Frame, RecordingError
from rdvla.devices.cameras.realsense import RealSenseCameraConfig, open_realsense
from rdvla.devices.cameras.realsense.recording import describe_recording
from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
from rdvla.devices.cameras.realsense.synthetic import SyntheticRealSense, pattern_frame, write_synthetic_recording
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_FPS as FPS
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_HEIGHT as HEIGHT
from rdvla.devices.cameras.realsense.synthetic import DEFAULT_WIDTH as WIDTH
from rdvla.devices.cameras.realsense.synthetic import synthetic_timestamp_ms as stamp
from rdvla.devices.testing import wait_until

pytestmark = pytest.mark.timeout(60)


def play(path: Path, **overrides: object) -> list[Frame]:
    """Every frame of a recording, frame by frame, through the same class that reads live cameras."""
    fields: dict[str, object] = dict(recording=str(path), depth=True, align_depth=False, real_time=False)
    fields.update(overrides)
    camera = open_realsense(RealSenseCameraConfig(**fields))  # type: ignore[arg-type]
    frames = []
    with camera:
        with pytest.raises(CameraEndedError):
            for _ in range(1000):
                frames.append(camera.read(timeout_s=5.0))
        assert camera.connection == CameraConnection.ENDED
    return frames


def assert_recorded_episode(frames: list[Frame], total: int) -> None:
    numbers = [frame.frame_number for frame in frames]
    assert len(frames) >= total - 3, numbers
    assert all(a < b for a, b in zip(numbers, numbers[1:])), numbers
    assert numbers[-1] == total - 1
    for frame in frames:
        color, depth = pattern_frame(WIDTH, HEIGHT, frame.frame_number)
        np.testing.assert_array_equal(frame.image, color)
        assert frame.depth is not None
        np.testing.assert_array_equal(frame.depth, depth)
        assert frame.timestamp_ms == pytest.approx(stamp(frame.frame_number), abs=1e-3)


def test_recording_is_described(episode: Path, episode_frames: int) -> None:
    info = describe_recording(episode)
    assert info.frame_count == episode_frames
    assert info.serial == "000000000001"
    streams = {s.profile.stream: s for s in info.streams}
    assert set(streams) == {"color", "depth"}
    assert (streams["color"].profile.width, streams["color"].profile.height, streams["color"].profile.fps) == (WIDTH, HEIGHT, FPS)
    assert streams["color"].profile.format == "rgb8" and streams["depth"].profile.format == "z16"
    assert streams["depth"].frame_count == episode_frames
    assert info.span_s == pytest.approx(episode_frames / FPS, rel=1e-6)
    assert info.duration_s >= 0.0


def test_playback_yields_the_recorded_frames_in_order(episode: Path, episode_frames: int) -> None:
    assert_recorded_episode(play(episode), episode_frames)


def test_playback_is_deterministic(episode: Path) -> None:
    def signature(frames: list[Frame]) -> list[tuple[int, float, bytes]]:
        return [(f.frame_number, f.timestamp_ms, f.image.tobytes() + f.depth.tobytes()) for f in frames if f.depth is not None]

    first, second = play(episode), play(episode)
    assert signature(first) == signature(second)


def test_playback_aligns_depth_like_live(episode: Path, episode_frames: int) -> None:
    frames = play(episode, align_depth=True)
    assert len(frames) >= episode_frames - 3
    for frame in frames:
        _, depth = pattern_frame(WIDTH, HEIGHT, frame.frame_number)
        assert frame.depth is not None and frame.depth.shape == (HEIGHT, WIDTH)
        assert np.mean(frame.depth == depth) > 0.9


def test_playback_read_latest_steps_one_frame_per_call(episode: Path) -> None:
    camera = open_realsense(RealSenseCameraConfig(recording=str(episode), real_time=False))
    with camera:
        numbers = [camera.read_latest(max_age_s=0.001).frame_number for _ in range(5)]
    assert all(a < b for a, b in zip(numbers, numbers[1:]))
    assert numbers[-1] <= 7  # consecutive frames, save the start-up losses


def test_playback_rejects_streams_it_does_not_hold(episode: Path) -> None:
    from rdvla.devices.cameras.base import UnsupportedProfileError

    camera = open_realsense(RealSenseCameraConfig(recording=str(episode), width=640, height=480))
    with pytest.raises(UnsupportedProfileError, match="64x48@30 rgb8"):
        camera.connect()


def test_real_time_playback_is_paced_and_ends(tmp_path: Path) -> None:
    # Inject at the camera's pace so the file has a real duration to play back.
    path = tmp_path / f"paced{recording_extension(sdk_version())}"
    frames = 12

    def paced() -> object:
        for number in range(frames):
            yield (*pattern_frame(WIDTH, HEIGHT, number), stamp(number))
            time.sleep(1.0 / FPS)

    write_synthetic_recording(path, paced(), width=WIDTH, height=HEIGHT, fps=FPS, depth=False)  # type: ignore[arg-type]
    recorded = describe_recording(path).duration_s
    assert recorded > 0.2
    camera = open_realsense(RealSenseCameraConfig(recording=str(path), real_time=True))
    started = time.monotonic()
    seen = []
    with camera:
        while camera.connection == CameraConnection.STREAMING:
            try:
                seen.append(camera.read(timeout_s=0.5).frame_number)
            except CameraEndedError:
                break
        assert wait_until(lambda: camera.connection == CameraConnection.ENDED)
    elapsed = time.monotonic() - started
    assert elapsed > 0.5 * recorded
    assert seen and all(a < b for a, b in zip(seen, seen[1:]))


def test_live_recording_needs_the_sdk_extension(tmp_path: Path) -> None:
    wrong = ".bag" if recording_extension(sdk_version()) == ".db3" else ".db3"
    synthetic = SyntheticRealSense("100000000009")
    config = RealSenseCameraConfig(serial="100000000009", width=WIDTH, height=HEIGHT, fps=FPS, record_to=str(tmp_path / f"x{wrong}"))
    with pytest.raises(RecordingError, match=f"records {recording_extension(sdk_version())} files"):
        open_realsense(config, device_finder=synthetic.find).connect()


def test_extension_follows_the_sdk_version() -> None:
    assert recording_extension((2, 56, 5)) == ".bag"
    assert recording_extension((2, 57, 7)) == ".bag"
    assert recording_extension((2, 58, 0)) == ".db3"
    assert recording_extension((2, 59, 1, 11053)) == ".db3"


@pytest.fixture
def damaged(episode: Path, tmp_path: Path) -> dict[str, Path]:
    data = episode.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "garbage": b"this is not a recording\n" * 100,
        "empty": b"",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}{episode.suffix}"
        paths[name].write_bytes(content)
    paths["missing"] = tmp_path / f"missing{episode.suffix}"
    paths["not a recording"] = Path(shutil.copy(episode, tmp_path / "episode.txt"))
    return paths


@pytest.mark.parametrize(
    "case, message",
    [
        ("truncated", "corrupt or truncated"),
        ("garbage", "corrupt or truncated"),
        ("empty", "empty"),
        ("missing", "recording not found"),
        ("not a recording", "not a RealSense recording"),
    ],
)
def test_bad_recordings_give_clear_errors(damaged: dict[str, Path], case: str, message: str) -> None:
    path = damaged[case]
    with pytest.raises(RecordingError, match=message) as described:
        describe_recording(path)
    assert "\n" not in str(described.value)
    camera = open_realsense(RealSenseCameraConfig(recording=str(path), real_time=False))
    with pytest.raises(RecordingError, match=message):
        camera.connect()
    assert camera.connection == CameraConnection.DISCONNECTED


def test_long_playback_with_a_slow_reader_loses_nothing(tmp_path: Path) -> None:
    # Far more framesets than the unread backlog allowed: the file is paused and resumed under the reader.
    path = tmp_path / f"long{recording_extension(sdk_version())}"
    total = 120
    write_synthetic_recording(path, ((*pattern_frame(WIDTH, HEIGHT, n), stamp(n)) for n in range(total)), width=WIDTH, height=HEIGHT, fps=FPS)
    camera = open_realsense(RealSenseCameraConfig(recording=str(path), depth=True, align_depth=False, real_time=False))
    frames = []
    with camera:
        time.sleep(0.2)  # let the playback run ahead of the reader
        with pytest.raises(CameraEndedError):
            for _ in range(10 * total):
                frames.append(camera.read(timeout_s=5.0))
                time.sleep(0.001)
    assert_recorded_episode(frames, total)
