#!/usr/bin/env python3
"""Write TensorFlow reference fixtures for runtime/preprocess/ (spec section 1.2).

Run it in a separate virtualenv that has TensorFlow -- never in the project's
.venv, which must stay TensorFlow-free like the robot:

    python3.11 -m venv /tmp/rdvla-tfenv
    /tmp/rdvla-tfenv/bin/pip install tensorflow-cpu numpy pillow   # or "tensorflow"
    /tmp/rdvla-tfenv/bin/python scripts/make_preprocess_fixtures.py [--out DIR]

(``scripts/make_preprocess_fixtures.sh`` does exactly this.)  The fixtures are
written to tests/fixtures/preprocess/ and checked by
tests/runtime/preprocess/test_preprocess.py.

This script deliberately imports only TensorFlow, numpy and the standard
library: it is the independent reference, and it calls the same TensorFlow
functions, with the same arguments, as the RD-VLA authors' evaluation code
(``resize_image_for_policy`` and ``center_crop_image`` in
experiments/robot/openvla_utils.py).  TensorFlow runs on the CPU.

Each ``<case>.npz`` (compressed) holds:
  image        uint8 (H, W, 3)    synthetic input (deterministic, see make_image)
  jpeg_sha256  str                sha256 of the C-order bytes of the whole JPEG round trip
                                  tf.io.decode_image(tf.image.encode_jpeg(image)) (uint8, H x W x 3)
  jpeg_window  uint8 (h, w, 3)    part of that round trip (up to 96x96 at the image centre)
  jpeg_window_origin int64 (2,)   (top, left) of jpeg_window
  resized      uint8 (224, 224, 3) step 1: JPEG round trip + lanczos3 antialias resize
  cropped      uint8 (224, 224, 3) step 2: center crop of ``resized``
  tf_version, numpy_version, platform   str
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # the CPU kernels are the reference

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

IMAGE_SIZE = 224
CROP_SCALE = 0.9
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "preprocess"

# (width, height): LIBERO renders, RealSense colour modes, CALVIN static/gripper cameras,
# and an already-224 image.
SIZES = {
    "libero_256x256": (256, 256),
    "realsense_640x480": (640, 480),
    "realsense_848x480": (848, 480),
    "calvin_200x200": (200, 200),
    "calvin_84x84": (84, 84),
    "square_224x224": (224, 224),
}


# ---------------------------------------------------------------------------------------------
# Synthetic images
# ---------------------------------------------------------------------------------------------


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = x / max(w - 1, 1) * 255.0
    g = y / max(h - 1, 1) * 255.0
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    b = 255.0 * (1.0 - np.hypot(y - cy, x - cx) / np.hypot(cy, cx))
    return np.stack([r, g, b], axis=-1)


def _texture(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    # periodic (periods of 3..7 px) so the fixture compresses, yet full of high frequencies
    for px, py, phase in ((3.0, 5.0, 0.0), (5.0, 7.0, 1.0), (7.0, 3.0, 2.0)):
        chans.append(
            127.5 + 127.5 * np.sin(2 * np.pi * x / px + phase) * np.cos(2 * np.pi * y / py)
        )
    img = np.stack(chans, axis=-1)
    # one-pixel checkerboard in the lower half: energy at the Nyquist frequency
    checker = ((x + y) % 2 == 0)[..., None]
    img[h // 2 :] = np.where(checker[h // 2 :], 240.0, 15.0)
    return img


def _edges(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, 3))
    img[:] = (10.0, 200.0, 230.0)
    block = ((x // max(w // 7, 1) + y // max(h // 5, 1)) % 2 == 1)
    img[block] = (250.0, 20.0, 40.0)
    disc = np.hypot(y - 0.55 * h, x - 0.4 * w) < 0.25 * min(h, w)
    img[disc] = (255.0, 255.0, 255.0)
    ring = np.abs(np.hypot(y - 0.55 * h, x - 0.4 * w) - 0.3 * min(h, w)) < 1.0
    img[ring] = (0.0, 0.0, 0.0)
    stripe = np.abs((x - y * w / h) % max(w // 6, 2)) < 1.5
    img[stripe] = (0.0, 255.0, 0.0)
    return img


def _noise(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform 0..255 noise in a centred patch of at most 128x128 pixels (the fixture
    size budget), on a background of 1- to 3-pixel bars."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.where(((x // (1 + y % 3)) % 2 == 0)[..., None], 200.0, 35.0) * np.ones(3)
    ph, pw = min(h, 128), min(w, 128)
    top, left = (h - ph) // 2, (w - pw) // 2
    img[top : top + ph, left : left + pw] = rng.integers(0, 256, size=(ph, pw, 3))
    return img


def make_image(width: int, height: int, seed: int) -> np.ndarray:
    """Composite test image: quadrants of gradient | texture / edges | noise.

    One composite per size keeps the fixtures small while every image exercises
    smooth areas, high frequencies, saturated sharp edges and random noise
    (and the quadrant borders add more edges).
    """
    rng = np.random.default_rng(seed)
    h2, w2 = height // 2, width // 2
    img = np.empty((height, width, 3))
    img[:h2, :w2] = _gradient(h2, w2)
    img[:h2, w2:] = _texture(h2, width - w2)
    img[h2:, :w2] = _edges(height - h2, w2)
    img[h2:, w2:] = _noise(height - h2, width - w2, rng)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def jpeg_window(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the stored part of the JPEG round trip: up to 96x96 around
    the centre, where all four quadrants meet."""
    wh, ww = min(height, 96), min(width, 96)
    return (height - wh) // 2, (width - ww) // 2, wh, ww


# ---------------------------------------------------------------------------------------------
# The authors' TensorFlow pipeline (same calls, same arguments)
# ---------------------------------------------------------------------------------------------


def tf_jpeg_roundtrip(img: np.ndarray) -> np.ndarray:
    enc = tf.image.encode_jpeg(img)
    return tf.io.decode_image(enc, expand_animations=False, dtype=tf.uint8).numpy()


def tf_resize_for_policy(img: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    out = tf.image.encode_jpeg(img)
    out = tf.io.decode_image(out, expand_animations=False, dtype=tf.uint8)
    out = tf.image.resize(out, (size, size), method="lanczos3", antialias=True)
    out = tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)
    return out.numpy()


def tf_center_crop(img: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
    image = tf.convert_to_tensor(img)
    orig_dtype = image.dtype
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = tf.expand_dims(image, axis=0)
    side = tf.reshape(tf.clip_by_value(tf.sqrt(crop_scale), 0, 1), shape=(1,))
    offset = (1 - side) / 2
    boxes = tf.stack([offset, offset, offset + side, offset + side], axis=1)
    image = tf.image.crop_and_resize(image, boxes, tf.range(1), (IMAGE_SIZE, IMAGE_SIZE))[0]
    image = tf.clip_by_value(image, 0, 1)
    image = tf.image.convert_image_dtype(image, orig_dtype, saturate=True)
    return image.numpy()


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with fixed zip timestamps, so that regenerating
    unchanged fixtures gives byte-identical files."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    total = 0
    for seed, (name, (width, height)) in enumerate(SIZES.items()):
        image = make_image(width, height, seed)
        jpeg = tf_jpeg_roundtrip(image)
        resized = tf_resize_for_policy(image)
        cropped = tf_center_crop(resized)
        top, left, wh, ww = jpeg_window(height, width)
        path = args.out / f"{name}.npz"
        save_npz(
            path,
            image=image,
            jpeg_sha256=np.array(hashlib.sha256(np.ascontiguousarray(jpeg).tobytes()).hexdigest()),
            jpeg_window=jpeg[top : top + wh, left : left + ww],
            jpeg_window_origin=np.array([top, left], dtype=np.int64),
            resized=resized,
            cropped=cropped,
            tf_version=np.array(tf.__version__),
            numpy_version=np.array(np.__version__),
            platform=np.array(f"{platform.system()}-{platform.machine()}"),
        )
        size = path.stat().st_size
        total += size
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {size / 1024:.0f} KiB")
    print(f"total {total / 1024:.0f} KiB, TensorFlow {tf.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
