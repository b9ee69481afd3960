"""Camera kinds register themselves; `rdvla run`'s record and replay ask the kind, not RealSense."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from rdvla.cli.run import _camera_configs, _record_cameras
from rdvla.devices.cameras.realsense import RealSenseCameraConfig
from rdvla.devices.cameras.registry import CAMERA_TYPES, CameraType, camera_type, kind_of, kind_playing, register_camera_type


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    role: str
    recording: Optional[str] = None
    device: Optional[str] = None
    record_to: Optional[str] = None
    real_time: bool = True


@pytest.fixture
def fake_kind() -> Iterator[CameraType]:
    kind = CameraType(
        name="fake", config=FakeConfig, open=lambda config, clock: None,  # type: ignore[arg-type, return-value]
        recording_suffixes=(".fake",), recording_suffix=lambda: ".fake",
        replay=lambda recording, role, real_time: FakeConfig(role, recording=str(recording), real_time=real_time),
        record_into=lambda config, target: dataclasses.replace(config, record_to=str(target)),
        describe=lambda config: f"fake device {config.device}")
    register_camera_type(kind)
    yield kind
    CAMERA_TYPES.pop("fake")


def test_realsense_registers_itself_from_its_own_package() -> None:
    kind = camera_type("realsense")
    assert kind.config is RealSenseCameraConfig and kind_playing(Path("x.bag")) is kind and kind_playing(Path("x.db3")) is kind


def test_replay_asks_the_kind_that_plays_the_recording(fake_kind: CameraType, tmp_path: Path) -> None:
    recording = tmp_path / "episode.fake"
    recording.write_bytes(b"")
    args = argparse.Namespace(recording=[recording], playback="stepped", config=None)
    configs = _camera_configs(args, None, 2)
    assert configs == [FakeConfig("third_person", str(recording), real_time=False), FakeConfig("wrist", str(recording), real_time=False)]
    with pytest.raises(ValueError, match=r"no camera type plays \.txt"):
        kind_playing(tmp_path / "notes.txt")


def test_record_asks_the_kind_for_its_suffix_and_recording_config(fake_kind: CameraType, tmp_path: Path) -> None:
    live: list[Any] = [FakeConfig("third_person", device="a"), FakeConfig("wrist", device="b")]
    configs, described, step_log = _record_cameras(tmp_path / "episode", live, overwrite=False)
    try:
        assert [c.record_to for c in configs] == [str(tmp_path / "episode" / f"{role}.fake") for role in ("third_person", "wrist")]
        assert described == [{"role": "third_person", "recording": "third_person.fake", "source": "fake device a"},
                             {"role": "wrist", "recording": "wrist.fake", "source": "fake device b"}]
        assert kind_of(configs[0]) is fake_kind
    finally:
        step_log.close()
