"""runtime/preprocess/ against TensorFlow reference fixtures, stage by stage.

The fixtures (tests/fixtures/preprocess/*.npz) are written by
scripts/make_preprocess_fixtures.py with the authors' TensorFlow calls; see that
script for how to regenerate them.

Agreement measured when the fixtures were made (TensorFlow 2.21.0 CPU, x86_64,
glibc): every stage is bit-identical on every fixture -- 100% of pixels equal,
max |diff| 0 -- for the JPEG round trip, step 1 (JPEG + Lanczos3 resize) and
step 2 (centre crop).  The thresholds below keep that level where the
arithmetic is platform-independent (integer JPEG maths, IEEE float32 crop) and
allow a sliver of margin only where a C-library ``sinf`` enters (the resize
weights): with numpy's own float32 ``sin`` instead of glibc's, 1 channel value
in 150,528 flips by one level.
"""

from __future__ import annotations

import functools

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rdvla.runtime import preprocess as pp
from rdvla.runtime.preprocess import jpeg, lanczos

# These tests hold the numpy implementation, the executable specification, to TensorFlow;
# tests/native holds the C++ one to both.
numpy_pixel_values = functools.partial(pp.to_pixel_values, implementation="numpy")

FIXTURE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "preprocess"
EXPECTED_CASES = {
    "libero_256x256",
    "realsense_640x480",
    "realsense_848x480",
    "calvin_200x200",
    "calvin_84x84",
    "square_224x224",
}

# Step 1 and the end-to-end step 2 (resize weights involve sinf; see module docstring).
MIN_EQUAL_SHARE = 0.9999  # measured: 1.0
MAX_ABS_DIFF = 1  # measured: 0
MAX_MEAN_ABS_DIFF = 1e-4  # measured: 0.0

DINO_MEAN = np.array([0.484375, 0.455078125, 0.40625], dtype=np.float32)
DINO_STD = np.array([0.228515625, 0.2236328125, 0.224609375], dtype=np.float32)


def _diff_stats(ours: np.ndarray, ref: np.ndarray) -> tuple[float, int, float]:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    return float(np.mean(diff == 0)), int(diff.max()), float(diff.mean())


def _assert_close_to_tf(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    equal, max_abs, mean_abs = _diff_stats(ours, ref)
    msg = f"{what}: equal={equal:.6%} max|d|={max_abs} mean|d|={mean_abs:.2e}"
    assert equal >= MIN_EQUAL_SHARE, msg
    assert max_abs <= MAX_ABS_DIFF, msg
    assert mean_abs <= MAX_MEAN_ABS_DIFF, msg


def _normalise(img: np.ndarray) -> np.ndarray:
    """The Prismatic processor in float32: to_tensor (/255), then (x - mean) / std."""
    x = img.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    dino = (x - DINO_MEAN[:, None, None]) / DINO_STD[:, None, None]
    siglip = (x - np.float32(0.5)) / np.float32(0.5)
    return np.concatenate([dino, siglip], axis=0)


# ----------------------------------------------------------------------------------------------
# Fixtures themselves
# ----------------------------------------------------------------------------------------------


def test_fixture_set_is_complete_and_small(tf_cases: dict[str, dict[str, np.ndarray]]) -> None:
    assert set(tf_cases) == EXPECTED_CASES
    assert sum(p.stat().st_size for p in FIXTURE_DIR.glob("*.npz")) < 5 * 1024 * 1024
    for name, data in tf_cases.items():
        h, w = data["image"].shape[:2]
        assert name.endswith(f"{w}x{h}")
        assert data["resized"].shape == data["cropped"].shape == (224, 224, 3)
        assert str(data["tf_version"]).count(".") == 2


# ----------------------------------------------------------------------------------------------
# Stage by stage against TensorFlow
# ----------------------------------------------------------------------------------------------


def test_jpeg_roundtrip_is_bit_exact(tf_case: dict[str, np.ndarray]) -> None:
    ours = pp.jpeg_roundtrip(tf_case["image"])
    assert ours.shape == tf_case["image"].shape and ours.dtype == np.uint8
    top, left = (int(v) for v in tf_case["jpeg_window_origin"])
    wh, ww = tf_case["jpeg_window"].shape[:2]
    np.testing.assert_array_equal(ours[top : top + wh, left : left + ww], tf_case["jpeg_window"])
    assert hashlib.sha256(ours.tobytes()).hexdigest() == str(tf_case["jpeg_sha256"])


def test_step1_resize_matches_tf(tf_case: dict[str, np.ndarray]) -> None:
    ours = pp.resize_for_policy(tf_case["image"])
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    _assert_close_to_tf(ours, tf_case["resized"], "step 1 (jpeg + lanczos3)")


def test_step2_center_crop_of_tf_step1_is_bit_exact(tf_case: dict[str, np.ndarray]) -> None:
    ours = pp.center_crop(tf_case["resized"])
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, tf_case["cropped"])


def test_steps_1_and_2_end_to_end_match_tf(tf_case: dict[str, np.ndarray]) -> None:
    ours = pp.center_crop(pp.resize_for_policy(tf_case["image"]))
    _assert_close_to_tf(ours, tf_case["cropped"], "steps 1+2")


def test_pixel_values_end_to_end_match_tf(tf_cases: dict[str, dict[str, np.ndarray]]) -> None:
    primary = tf_cases["libero_256x256"]
    wrist = tf_cases["realsense_640x480"]
    pv = numpy_pixel_values([primary["image"], wrist["image"]])
    assert pv.shape == (1, 12, 224, 224) and pv.dtype == np.float32
    expected = np.concatenate([_normalise(primary["cropped"]), _normalise(wrist["cropped"])])
    # one uint8 level is 1/255/std <= 0.0172 in normalised units
    mismatch = np.abs(pv[0] - expected) > 1e-6
    assert mismatch.mean() <= 1 - MIN_EQUAL_SHARE
    np.testing.assert_allclose(pv[0], expected, rtol=0, atol=MAX_ABS_DIFF / 255 / 0.2236 + 1e-6)


# ----------------------------------------------------------------------------------------------
# Step 3: pixel_values layout and normalisation, computed by hand
# ----------------------------------------------------------------------------------------------


def test_pixel_values_layout_and_normalisation_by_hand() -> None:
    rng = np.random.default_rng(7)
    primary = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    wrist = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    pv = numpy_pixel_values([primary, wrist], center_crop=False)
    assert pv.shape == (1, 12, 224, 224) and pv.dtype == np.float32
    assert pv.flags["C_CONTIGUOUS"]

    dino_mean = (0.484375, 0.455078125, 0.40625)
    dino_std = (0.228515625, 0.2236328125, 0.224609375)
    for y, x in [(0, 0), (17, 200), (223, 223), (111, 5)]:
        for i, img in enumerate((primary, wrist)):
            for c in range(3):
                v = float(img[y, x, c]) / 255.0
                assert pv[0, 6 * i + c, y, x] == pytest.approx(
                    (v - dino_mean[c]) / dino_std[c], abs=1e-6
                )
                assert pv[0, 6 * i + 3 + c, y, x] == pytest.approx((v - 0.5) / 0.5, abs=1e-6)
    # order [primary-DINO, primary-SigLIP, wrist-DINO, wrist-SigLIP], float32-exact
    np.testing.assert_array_equal(pv[0, :6], _normalise(primary))
    np.testing.assert_array_equal(pv[0, 6:], _normalise(wrist))

    # extremes: 0 and 255
    black_white = np.zeros((224, 224, 3), np.uint8)
    black_white[:, 112:] = 255
    pv1 = numpy_pixel_values([black_white], center_crop=False)
    assert pv1.shape == (1, 6, 224, 224)
    assert pv1[0, 3, 0, 0] == -1.0 and pv1[0, 3, 0, 223] == 1.0
    assert pv1[0, 0, 0, 0] == pytest.approx(-0.484375 / 0.228515625)


def test_center_crop_default_follows_config(tf_cases: dict[str, dict[str, np.ndarray]]) -> None:
    img = tf_cases["square_224x224"]["image"]
    no_crop = pp.PreprocessConfig(center_crop=False)
    np.testing.assert_array_equal(
        numpy_pixel_values([img], config=no_crop), numpy_pixel_values([img], center_crop=False)
    )
    np.testing.assert_array_equal(
        numpy_pixel_values([img]), numpy_pixel_values([img], center_crop=True)
    )
    assert not np.array_equal(numpy_pixel_values([img]), numpy_pixel_values([img], False))


def test_224_input_is_not_resized_like_the_authors_code(tf_cases: dict[str, dict[str, np.ndarray]]) -> None:
    data = tf_cases["square_224x224"]
    img = data["image"]
    # prepare_images_for_vla skips resize_image_for_policy (and its JPEG) for 224x224 input
    np.testing.assert_array_equal(pp.prepare_image(img, center_crop=False), img)
    np.testing.assert_array_equal(pp.prepare_image(img), pp.center_crop(img))
    # other sizes are resized first
    other = tf_cases["calvin_200x200"]
    _assert_close_to_tf(pp.prepare_image(other["image"]), other["cropped"], "prepare_image")


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([[1, 2, 3]], "numpy.ndarray"),
        (np.zeros((8, 8, 3), np.float32), "dtype uint8"),
        (np.zeros((8, 8, 3), np.int64), "dtype uint8"),
        (np.zeros((8, 8), np.uint8), "grayscale"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((8, 8, 4), np.uint8), "alpha"),
        (np.zeros((3, 8, 9), np.uint8), "channel-first"),
        (np.zeros((1, 8, 3), np.uint8), "at least 2x2"),
    ],
)
def test_invalid_images_are_rejected(bad: object, match: str) -> None:
    for fn in (pp.validate_image, pp.resize_for_policy, pp.center_crop, pp.jpeg_roundtrip):
        with pytest.raises(ValueError, match=match):
            fn(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        numpy_pixel_values([np.zeros((224, 224, 3), np.uint8), bad])  # type: ignore[list-item]


def test_to_pixel_values_argument_errors() -> None:
    img = np.zeros((224, 224, 3), np.uint8)
    with pytest.raises(ValueError, match="at least one image"):
        numpy_pixel_values([])
    with pytest.raises(ValueError, match="sequence"):
        numpy_pixel_values(img)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"images\[1\]"):
        numpy_pixel_values([img, img.astype(np.float32)])
    with pytest.raises(ValueError, match="crop_scale"):
        pp.center_crop(img, crop_scale=1.5)
    with pytest.raises(ValueError, match="size"):
        pp.resize_for_policy(img, size=0)


# ----------------------------------------------------------------------------------------------
# Configuration, caching, purity
# ----------------------------------------------------------------------------------------------


def test_config_manifest_round_trip_and_validation() -> None:
    manifest = pp.DEFAULT_CONFIG.to_manifest()
    assert json.loads(json.dumps(manifest)) == manifest
    assert manifest["image_size"] == 224 and manifest["jpeg_quality"] == 95
    assert manifest["crop_scale"] == 0.9
    assert manifest["dino_mean"] == [0.484375, 0.455078125, 0.40625]
    assert manifest["dino_std"] == [0.228515625, 0.2236328125, 0.224609375]
    assert manifest["siglip_mean"] == manifest["siglip_std"] == [0.5, 0.5, 0.5]
    assert pp.PreprocessConfig.from_manifest(manifest) == pp.DEFAULT_CONFIG
    with pytest.raises(ValueError, match="unknown"):
        pp.PreprocessConfig.from_manifest({**manifest, "bogus": 1})
    with pytest.raises(ValueError, match="crop_scale"):
        pp.PreprocessConfig(crop_scale=0.0)
    with pytest.raises(ValueError, match="JPEG"):
        pp.PreprocessConfig(jpeg_quality=90)


def test_resize_weights_are_cached_and_normalised() -> None:
    lanczos._resize_spans.cache_clear()
    img = np.zeros((480, 640, 3), np.uint8)
    pp.resize_for_policy(img)
    misses = lanczos._resize_spans.cache_info().misses
    pp.resize_for_policy(img)
    assert lanczos._resize_spans.cache_info().misses == misses == 2
    index, weights = lanczos._resize_spans(640, 224)
    assert weights.dtype == np.float32 and not weights.flags.writeable
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-6)
    assert index.min() >= 0 and index.max() <= 639


def test_quality_95_tables_match_libjpeg_scaling() -> None:
    tables = jpeg._jpeg_tables(95)
    # jpeg_set_quality(95): scale factor 10%, rounded, clamped to >= 1
    assert tables["luma_q"][0, 0] == 2 and tables["luma_q"][7, 7] == 10
    assert tables["chroma_q"][0, 0] == 2 and tables["chroma_q"][7, 7] == 10
    assert tables["luma_q"].min() >= 1


def test_module_is_numpy_only_and_silent(capsys: pytest.CaptureFixture[str]) -> None:
    code = (
        "import sys, rdvla.runtime.preprocess; "
        "bad = [m for m in ('tensorflow', 'torch', 'cv2') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
    numpy_pixel_values([np.zeros((256, 256, 3), np.uint8)])
    assert capsys.readouterr() == ("", "")
