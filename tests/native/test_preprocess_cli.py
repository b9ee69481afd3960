"""`rdvla preprocess` on the TensorFlow fixtures: both implementations give the same pixel_values, the
pictures it writes are TensorFlow's crops, and the timing output has its documented fields."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rdvla.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preprocess"
pytest.importorskip("rdvla._native", reason="the native extension is not built (CI builds it)")


@pytest.fixture(scope="module")
def camera_images(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, np.ndarray]]:
    """Two fixtures as PNG files, with TensorFlow's crop of each."""
    folder = tmp_path_factory.mktemp("cameras")
    out = []
    for name in ("realsense_640x480", "libero_256x256"):
        with np.load(FIXTURES / f"{name}.npz") as fixture:
            Image.fromarray(fixture["image"]).save(folder / f"{name}.png")
            out.append((folder / f"{name}.png", fixture["cropped"]))
    return out


def test_both_implementations_write_identical_pixel_values_and_tensorflows_crops(
        camera_images: list[tuple[Path, np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = [arg for path, _ in camera_images for arg in ("--image", str(path))]
    outputs = {}
    for implementation in ("native", "numpy"):
        out = tmp_path / implementation
        assert main(["preprocess", *images, "--out", str(out), "--preprocessing", implementation]) == 0
        outputs[implementation] = np.load(out / "pixel_values.npy")
        for camera, (_, tf_crop) in enumerate(camera_images):
            seen = np.asarray(Image.open(out / f"camera{camera}.png"))
            assert np.array_equal(seen, tf_crop), f"camera {camera}: not what TensorFlow's pipeline makes"
    assert outputs["native"].shape == (1, 12, 224, 224) and outputs["native"].dtype == np.float32
    assert np.array_equal(outputs["native"], outputs["numpy"])
    assert "(native)" in capsys.readouterr().out


def test_repeat_times_the_preprocessing_and_json_reports_it(camera_images: list[tuple[Path, np.ndarray]], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = str(camera_images[0][0])
    assert main(["preprocess", "--image", path, "--image", path, "--out", str(tmp_path), "--repeat", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["implementation"] == "native" and (report["frames"], report["height"], report["width"]) == (2, 480, 640)
    assert 0 < report["median_ms"] <= report["p95_ms"]
