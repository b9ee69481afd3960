"""Fixtures for the devices tests: a fake clock, and a recording made with the SDK's software device."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
from rdvla.devices.cameras.realsense.synthetic import pattern_frame, synthetic_timestamp_ms, write_synthetic_recording
from rdvla.devices.testing import FakeClock

EPISODE_FRAMES = 30


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def episode_frames() -> int:
    return EPISODE_FRAMES


@pytest.fixture(scope="session")
def episode(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 colour+depth framesets whose pixels encode their frame number, recorded through RealSenseCamera."""
    path = tmp_path_factory.mktemp("recordings") / f"episode{recording_extension(sdk_version())}"
    frames = ((*pattern_frame(64, 48, n), synthetic_timestamp_ms(n)) for n in range(EPISODE_FRAMES))
    assert write_synthetic_recording(path, frames) == EPISODE_FRAMES
    return path
