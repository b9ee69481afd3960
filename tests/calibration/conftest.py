"""Fixtures for the calibration tests: camera recordings made without a camera, and one calibrated tiny bundle."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from rdvla.devices.cameras.realsense.sdk import recording_extension, sdk_version
from rdvla.devices.cameras.realsense.synthetic import synthetic_timestamp_ms, write_synthetic_recording

FRAMES = 12
WIDTH, HEIGHT = 96, 72
INSTRUCTION = "put the bowl on the plate"


def scene(camera: int, frame: int) -> np.ndarray:
    """A smooth image that moves a little every frame, different per camera."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH] / WIDTH
    phase = 0.3 * frame + 2.0 * camera
    rgb = np.stack([np.sin(6 * x + phase), np.cos(5 * y - phase), np.sin(4 * (x + y) + camera)], -1)
    return np.clip(127 + 100 * rgb, 0, 255).astype(np.uint8)


def record(path: Path, camera: int, frames: int = FRAMES) -> Path:
    made = ((scene(camera, n), None, synthetic_timestamp_ms(n)) for n in range(frames))
    assert write_synthetic_recording(path, made, serial=f"00000000000{camera + 1}", width=WIDTH, height=HEIGHT, depth=False) == frames
    return path


@pytest.fixture(scope="session")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a third-person and a wrist recording of FRAMES frames (a bare two-camera source)."""
    directory = tmp_path_factory.mktemp("recordings")
    ext = recording_extension(sdk_version())
    for camera, role in enumerate(("third_person", "wrist")):
        record(directory / f"{role}{ext}", camera)
    return directory


@pytest.fixture(scope="session")
def cli() -> Callable[[list[str]], int]:
    from rdvla.cli import main

    return main


@pytest.fixture(scope="session")
def calibrated(tiny_bundle: Path, recordings: Path, tmp_path_factory: pytest.TempPathFactory,
               cli: Callable[[list[str]], int]) -> dict[str, Any]:
    """The tiny bundle calibrated for INT8 and FP16 from the two recordings: 6 queries, 8 core states each."""
    import json

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("calibrated") / "bundle"))
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli(["calibrate", str(bundle), "--data", str(recordings), "--instruction", INSTRUCTION,
                      "--precision", "int8,fp16", "--queries", "6", "--latents-per-query", "8"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    report = json.loads((bundle / manifest["calibration"]["report"]).read_text())
    return {"bundle": bundle, "status": status, "stdout": out.getvalue(), "manifest": manifest, "report": report}
