"""rdvla._native (native/) against TensorFlow's fixtures and the numpy specification.

Every comparison is bit for bit: uint8 stages and the float32 pixel_values must be equal
with ``np.array_equal`` (which fails on NaN), on 100% of the values.  The fixtures
(tests/fixtures/preprocess/*.npz, written by scripts/make_preprocess_fixtures.py with
TensorFlow) are the same ones tests/runtime/preprocess/test_preprocess.py uses for the numpy module.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rdvla.runtime import preprocess as reference

native = pytest.importorskip(
    "rdvla._native",
    reason="the native extension rdvla._native is not built (pip install . needs a C++17 "
    "compiler, CMake, libjpeg-turbo headers and nanobind)",
)

CONFIG = reference.DEFAULT_CONFIG


def _kwargs(config: reference.PreprocessConfig = CONFIG) -> dict[str, Any]:
    return {
        "image_size": config.image_size,
        "center_crop": config.center_crop,
        "crop_scale": config.crop_scale,
        "dino_mean": config.dino_mean,
        "dino_std": config.dino_std,
        "siglip_mean": config.siglip_mean,
        "siglip_std": config.siglip_std,
    }


def _pixel_values(
    images: list[np.ndarray], config: reference.PreprocessConfig = CONFIG
) -> np.ndarray:
    """native.preprocess_into into a NaN-filled buffer, so an unwritten value cannot pass."""
    size = config.image_size
    out = np.full((1, 6 * len(images), size, size), np.nan, dtype=np.float32)
    assert native.preprocess_into(images, out, **_kwargs(config)) is None
    return out


def _assert_identical(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.dtype == ref.dtype and ours.shape == ref.shape, (
        f"{what}: {ours.dtype}{ours.shape} vs {ref.dtype}{ref.shape}"
    )
    if not np.array_equal(ours, ref):
        wide = np.float64 if ours.dtype.kind == "f" else np.int64
        diff = np.abs(ours.astype(wide) - ref.astype(wide))
        pytest.fail(
            f"{what}: {np.count_nonzero(~(diff == 0))} of {diff.size} values differ, "
            f"max |diff| {np.nanmax(diff) if np.isfinite(diff).any() else 'nan'}"
        )


def _random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _smooth_image(h: int, w: int, phase: float = 0.0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255.0 * x / max(w - 1, 1)
    g = 255.0 * y / max(h - 1, 1)
    b = 127.5 + 100.0 * np.sin(x / 17.0 + phase) * np.cos(y / 23.0)
    return np.clip(np.round(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Against TensorFlow (the committed fixtures)
# ----------------------------------------------------------------------------------------------


def test_fixture_set_is_there(tf_cases: dict[str, dict[str, np.ndarray]]) -> None:
    assert len(tf_cases) == 6


def test_jpeg_roundtrip_equals_tf(tf_case: dict[str, np.ndarray]) -> None:
    ours = native.jpeg_roundtrip(tf_case["image"])
    assert ours.shape == tf_case["image"].shape and ours.dtype == np.uint8
    top, left = (int(v) for v in tf_case["jpeg_window_origin"])
    wh, ww = tf_case["jpeg_window"].shape[:2]
    _assert_identical(ours[top : top + wh, left : left + ww], tf_case["jpeg_window"], "jpeg window")
    assert hashlib.sha256(ours.tobytes()).hexdigest() == str(tf_case["jpeg_sha256"])


def test_resize_equals_tf(tf_case: dict[str, np.ndarray]) -> None:
    _assert_identical(native.resize_for_policy(tf_case["image"], 224), tf_case["resized"], "step 1")


def test_center_crop_of_tf_resize_equals_tf(tf_case: dict[str, np.ndarray]) -> None:
    _assert_identical(native.center_crop(tf_case["resized"], 0.9, 224), tf_case["cropped"], "step 2")


def test_steps_1_and_2_end_to_end_equal_tf(tf_case: dict[str, np.ndarray]) -> None:
    ours = native.center_crop(native.resize_for_policy(tf_case["image"], 224), 0.9, 224)
    _assert_identical(ours, tf_case["cropped"], "steps 1+2")


def test_pixel_values_equal_normalised_tf_crops(tf_cases: dict[str, dict[str, np.ndarray]]) -> None:
    primary = tf_cases["libero_256x256"]
    wrist = tf_cases["realsense_640x480"]
    ours = _pixel_values([primary["image"], wrist["image"]])
    mean = np.array(CONFIG.dino_mean + CONFIG.siglip_mean, np.float32).reshape(6, 1, 1)
    std = np.array(CONFIG.dino_std + CONFIG.siglip_std, np.float32).reshape(6, 1, 1)
    expected = []
    for cropped in (primary["cropped"], wrist["cropped"]):
        x = cropped.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        expected.append((np.concatenate([x, x]) - mean) / std)
    _assert_identical(ours, np.concatenate(expected)[None], "pixel_values vs TF")


def test_pixel_values_of_every_fixture_equal_numpy(tf_cases: dict[str, dict[str, np.ndarray]]) -> None:
    images = [case["image"] for case in tf_cases.values()]
    _assert_identical(_pixel_values(images), reference.to_pixel_values(images, implementation="numpy"), "pixel_values")


# ----------------------------------------------------------------------------------------------
# Against the numpy specification on a sweep of sizes
# ----------------------------------------------------------------------------------------------

# (height, width): odd, non-square, up- and downscaled, the 224 skip path, camera sizes.
SIZES = [
    (2, 2),
    (3, 500),
    (84, 84),
    (85, 97),
    (200, 200),
    (223, 225),
    (224, 224),
    (225, 224),
    (256, 256),
    (480, 640),
    (480, 848),
    (720, 1280),
]


@pytest.fixture(scope="module", params=SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def size_images(request: pytest.FixtureRequest) -> list[np.ndarray]:
    h, w = request.param
    return [_random_image(np.random.default_rng(h * 10007 + w), h, w), _smooth_image(h, w)]


def test_jpeg_roundtrip_equals_numpy(size_images: list[np.ndarray]) -> None:
    for img in size_images:
        _assert_identical(native.jpeg_roundtrip(img), reference.jpeg_roundtrip(img), "jpeg")


def test_lanczos_resize_equals_numpy(size_images: list[np.ndarray]) -> None:
    for img in size_images:
        for size in (224, 97):
            _assert_identical(
                native.resize_for_policy(img, size, jpeg=False),
                reference.resize_for_policy(img, size, jpeg=False),
                f"lanczos to {size}",
            )


def test_resize_for_policy_equals_numpy(size_images: list[np.ndarray]) -> None:
    for img in size_images:
        _assert_identical(
            native.resize_for_policy(img, 224), reference.resize_for_policy(img, 224), "step 1"
        )


@pytest.mark.parametrize("crop_scale", [0.9, 1.0, 0.5, 0.1234])
@pytest.mark.parametrize("size", [224, 97, 2, 1])
def test_center_crop_equals_numpy(crop_scale: float, size: int) -> None:
    rng = np.random.default_rng(size)
    for h, w in [(224, 224), (97, 131), (2, 2), (480, 640)]:
        img = _random_image(rng, h, w)
        _assert_identical(
            native.center_crop(img, crop_scale, size),
            reference.center_crop(img, crop_scale, size),
            f"crop {h}x{w} -> {size} at {crop_scale}",
        )


def test_pixel_values_equal_numpy(size_images: list[np.ndarray]) -> None:
    ours = _pixel_values(size_images)
    _assert_identical(ours, reference.to_pixel_values(size_images, implementation="numpy"), "pixel_values")
    assert np.isfinite(ours).all()


@pytest.mark.parametrize(
    "config",
    [
        reference.PreprocessConfig(center_crop=False),
        reference.PreprocessConfig(image_size=97, crop_scale=0.64),
        reference.PreprocessConfig(
            dino_mean=(0.485, 0.456, 0.406),
            dino_std=(0.229, 0.224, 0.225),
            siglip_mean=(0.1, 0.2, 0.3),
            siglip_std=(0.7, 0.8, 0.9),
        ),
    ],
    ids=["no-crop", "size-97", "other-stats"],
)
def test_pixel_values_follow_the_config(config: reference.PreprocessConfig) -> None:
    rng = np.random.default_rng(3)
    images = [_random_image(rng, 97, 97), _smooth_image(480, 640), _random_image(rng, 224, 224)]
    ours = _pixel_values(images, config)
    _assert_identical(ours, reference.to_pixel_values(images, config=config, implementation="numpy"), "pixel_values")


def test_224_input_skips_the_resize_and_its_jpeg() -> None:
    img = _random_image(np.random.default_rng(5), 224, 224)
    no_crop = reference.PreprocessConfig(center_crop=False)
    expected = reference.to_pixel_values([img], config=no_crop, implementation="numpy")
    _assert_identical(_pixel_values([img], no_crop), expected, "224 without crop")
    # A JPEG round trip of random pixels changes them; the skip path must not run it.
    assert not np.array_equal(native.jpeg_roundtrip(img), img)


def test_writes_into_a_view_of_a_larger_buffer_and_leaves_inputs_alone() -> None:
    rng = np.random.default_rng(6)
    images = [_random_image(rng, 120, 160), _random_image(rng, 224, 224)]
    for img in images:
        img.setflags(write=False)  # read-only camera buffers are accepted
    before = [img.copy() for img in images]
    staging = np.full(3 * 12 * 224 * 224, -7.0, dtype=np.float32)
    start = 12 * 224 * 224
    out = staging[start : 2 * start].reshape(1, 12, 224, 224)
    native.preprocess_into(images, out, **_kwargs())
    assert np.shares_memory(out, staging)
    _assert_identical(out, reference.to_pixel_values(images, implementation="numpy"), "staging view")
    assert (staging[:start] == -7.0).all() and (staging[2 * start :] == -7.0).all()
    for img, copy in zip(images, before, strict=True):
        _assert_identical(img, copy, "input untouched")


# ----------------------------------------------------------------------------------------------
# Threads
# ----------------------------------------------------------------------------------------------


def _run_threads(work: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors


def test_concurrent_calls_from_python_threads() -> None:
    rng = np.random.default_rng(8)
    jobs = [
        [_random_image(rng, 96 + 8 * i, 128 + 4 * i) for _ in range(1 + i % 3)] for i in range(6)
    ]
    expected = [reference.to_pixel_values(images, implementation="numpy") for images in jobs]
    results: list[list[np.ndarray]] = [[] for _ in jobs]

    def work(i: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(3):
                results[i].append(_pixel_values(jobs[i]))

        return run

    _run_threads([work(i) for i in range(len(jobs))])
    for i, outs in enumerate(results):
        assert len(outs) == 3
        for out in outs:
            _assert_identical(out, expected[i], f"thread {i}")


def test_weight_cache_is_thread_safe_across_many_sizes() -> None:
    # More (input, output) size pairs than the cache holds, from several threads at once.
    rng = np.random.default_rng(9)
    images = [_random_image(rng, 20 + i, 31 + 2 * i) for i in range(40)]
    expected = [reference.resize_for_policy(img, 24, jpeg=False) for img in images]
    mismatches: list[int] = []

    def work(offset: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(offset, len(images), 4):
                if not np.array_equal(native.resize_for_policy(images[i], 24, jpeg=False), expected[i]):
                    mismatches.append(i)

        return run

    _run_threads([work(k) for k in range(4)])
    assert mismatches == []


FORK_CHILD = """
import os, signal, sys
import numpy as np
from rdvla import _native
kwargs = dict(image_size=224, center_crop=True, crop_scale=0.9, dino_mean=(0.5, 0.5, 0.5),
              dino_std=(0.25, 0.25, 0.25), siglip_mean=(0.5, 0.5, 0.5), siglip_std=(0.5, 0.5, 0.5))
images = [np.full((120, 160, 3), v, np.uint8) for v in (10, 200)]
out = np.empty((1, 12, 224, 224), np.float32)
_native.preprocess_into(images, out, **kwargs)  # the parent's pool now exists
pid = os.fork()
if pid == 0:
    signal.alarm(30)  # a hung child is killed rather than left behind
    again = np.empty_like(out)
    _native.preprocess_into(images, again, **kwargs)
    sys.exit(0 if np.array_equal(again, out) else 3)  # a normal exit runs static destructors
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_preprocesses_and_exits() -> None:
    # The child has a copy of the parent's pool but none of its threads.
    result = subprocess.run([sys.executable, "-c", FORK_CHILD], timeout=60, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------------------------
# Argument errors
# ----------------------------------------------------------------------------------------------

GOOD = np.zeros((224, 224, 3), np.uint8)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([[1, 2, 3]], r"images\[1\] must be a numpy.ndarray"),
        (np.zeros((8, 8, 3), np.float32), r"images\[1\] must have dtype uint8.*float32"),
        (np.zeros((8, 8, 3), np.int64), r"images\[1\] must have dtype uint8.*int64"),
        (np.zeros((8, 8), np.uint8), r"images\[1\] must have shape \(H, W, 3\), got \(8, 8\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"must have shape \(H, W, 3\)"),
        (np.zeros((8, 8, 4), np.uint8), r"3 \(RGB\) channels last"),
        (np.zeros((1, 8, 3), np.uint8), "at least 2x2"),
        (np.zeros((8, 16, 3), np.uint8)[:, ::2], r"images\[1\] must be C-contiguous"),
        (np.zeros((8, 8, 3), np.uint8).transpose(1, 0, 2), "C-contiguous"),
    ],
)
def test_bad_images_raise_value_error_naming_them(bad: object, match: str) -> None:
    out = np.empty((1, 12, 224, 224), np.float32)
    with pytest.raises(ValueError, match=match):
        native.preprocess_into([GOOD, bad], out, **_kwargs())
    stage_match = match.replace(r"images\[1\]", "image")
    for stage in (
        native.jpeg_roundtrip,
        lambda img: native.resize_for_policy(img, 224),
        lambda img: native.center_crop(img, 0.9, 224),
    ):
        with pytest.raises(ValueError, match=stage_match):
            stage(bad)


@pytest.mark.parametrize(
    ("out", "match"),
    [
        (np.empty((1, 6, 224, 224), np.float32), r"out must have shape \(1, 12, 224, 224\)"),
        (np.empty((12, 224, 224), np.float32), r"out must have shape \(1, 12, 224, 224\)"),
        (np.empty((1, 12, 224, 224), np.float64), "out must have dtype float32, got float64"),
        (np.empty((1, 12, 224, 448), np.float32)[..., ::2], "out must be C-contiguous"),
        ([0.0], "out must be a numpy.ndarray of float32"),
    ],
)
def test_bad_out_raises_value_error(out: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        native.preprocess_into([GOOD, GOOD], out, **_kwargs())


def test_read_only_out_is_refused() -> None:
    out = np.empty((1, 6, 224, 224), np.float32)
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out must be writable"):
        native.preprocess_into([GOOD], out, **_kwargs())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"crop_scale": 0.0}, "crop_scale"),
        ({"crop_scale": 1.5}, "crop_scale"),
        ({"image_size": 0}, "image_size"),
        ({"dino_std": (0.2, 0.0, 0.2)}, "dino_std must be positive"),
        ({"siglip_mean": (0.5, float("nan"), 0.5)}, "siglip_mean must be finite"),
    ],
)
def test_bad_config_raises_value_error(change: dict[str, Any], match: str) -> None:
    out = np.empty((1, 6, 224, 224), np.float32)
    with pytest.raises(ValueError, match=match):
        native.preprocess_into([GOOD], out, **{**_kwargs(), **change})


def test_images_must_be_a_non_empty_sequence() -> None:
    out = np.empty((1, 6, 224, 224), np.float32)
    with pytest.raises(ValueError, match="sequence"):
        native.preprocess_into(GOOD, out, **_kwargs())
    with pytest.raises(ValueError, match="sequence.*got generator"):
        native.preprocess_into((img for img in [GOOD]), out, **_kwargs())
    with pytest.raises(ValueError, match="at least one image"):
        native.preprocess_into([], np.empty((1, 0, 224, 224), np.float32), **_kwargs())


def test_stage_argument_errors() -> None:
    with pytest.raises(ValueError, match="size must be positive"):
        native.resize_for_policy(GOOD, 0)
    with pytest.raises(ValueError, match="crop_scale"):
        native.center_crop(GOOD, 1.5, 224)
    with pytest.raises(ValueError, match="size must be positive"):
        native.center_crop(GOOD, 0.9, 0)
