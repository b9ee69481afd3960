"""Reading what a user hands a command: camera images, arrays, the proprio vector."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rdvla.runtime.normalization import FAR_OUTSIDE_RANGES, NormStats, far_outside_range

PROPRIO_DIM = 8
PROPRIO_NAMES = ("eef x", "eef y", "eef z", "axis-angle x", "axis-angle y", "axis-angle z", "gripper 1", "gripper 2")


def parse_proprio(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--proprio must be {PROPRIO_DIM} comma-separated numbers, got {text!r}") from None
    if len(values) != PROPRIO_DIM or not np.all(np.isfinite(values)):
        raise ValueError(f"--proprio must be {PROPRIO_DIM} finite numbers, got {len(values)}: {text!r}")
    return np.asarray(values, np.float64)


def check_proprio_range(proprio: np.ndarray, stats: NormStats) -> None:
    """Refuse a --proprio value far outside the dataset's range (FAR_OUTSIDE_RANGES), naming its dimension."""
    far = far_outside_range(proprio, stats)
    if far:
        i = far[0]
        low, high = stats.proprio_q01[i], stats.proprio_q99[i]
        raise ValueError(f"--proprio dimension {i} ({PROPRIO_NAMES[i]}) is {proprio[i]:g}, more than {FAR_OUTSIDE_RANGES:g} times "
                         f"the width of the dataset's range [{low:.4g}, {high:.4g}] ({stats.key}) outside it: check the units "
                         "(metres, radians) and the order (eef position 3, axis-angle 3, gripper 2)")


def instruction(text: str) -> str:
    """An argparse type: the task in words (not blank, and text the tokenizer can read)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give the task in words, e.g. 'open the drawer'")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"is not valid text ({text!r}); type it again in UTF-8") from None
    return text


def load_npy(path: Path, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A float32 array of `shape` from a .npy file (any real dtype; checked finite after the cast)."""
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; give a .npy file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):  # numpy's reason may advise allow_pickle=True, which runs code: not passed on
        raise ValueError(f"{path}: not a .npy array of numbers; save the {what} with numpy.save") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise ValueError(f"{path}: an .npz archive; give the {what} as one .npy array (numpy.save)")
    if array.shape != shape:
        raise ValueError(f"{path}: {what} has shape {array.shape}, expected {shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: {what} holds {array.dtype} values; give real numbers (float32)")
    with np.errstate(over="ignore"):
        values = array.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: {what} holds NaN or inf (or values beyond float32's range)")
    return values


# A camera frame is at most a few megapixels; a larger file is a mistake or a decompression bomb.
MAX_IMAGE_PIXELS = 40_000_000
# Pillow modes read as the policy expects: 8-bit ones convert to RGB (alpha dropped, palette expanded),
# 16-bit grayscale keeps its top 8 bits.
EIGHT_BIT_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def read_image(path: Path) -> np.ndarray:
    """A camera image file as uint8 HxWx3 RGB, or a one-line error naming the file."""
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise ValueError(f"image {path} is a directory; give an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(f"image {path} is {width}x{height}; a camera frame is at most "
                                 f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels")
            if width < 2 or height < 2:
                raise ValueError(f"image {path} is {width}x{height}; a camera frame is at least 2x2 pixels")
            img.load()
            return _to_rgb(img, path)
    except Image.DecompressionBombError:
        raise ValueError(f"image {path} declares more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels "
                         "(not a camera frame, or a decompression bomb)") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a readable image") from None
    except (OSError, SyntaxError) as exc:  # Pillow reports truncated and corrupt files so
        raise ValueError(f"{path}: a damaged image ({' '.join(str(exc).split()) or type(exc).__name__})") from None


def _to_rgb(img: "object", path: Path) -> np.ndarray:
    mode = img.mode  # type: ignore[attr-defined]
    if mode in EIGHT_BIT_MODES:
        return np.asarray(img.convert("RGB"))  # type: ignore[attr-defined]
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img, dtype=np.int64)
        if mode == "I" and (values.min() < 0 or values.max() > 0xFFFF):
            raise ValueError(f"{path}: a 32-bit integer image; save the camera frame as 8- or 16-bit")
        gray = (values >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    raise ValueError(f"{path}: image mode {mode} is not a camera frame; save it as 8-bit RGB (or 8/16-bit grayscale)")


def load_images(paths: list[Path], expected: int) -> list[np.ndarray]:
    if len(paths) != expected:
        raise ValueError(f"the model takes {expected} images (third-person, then wrist); got {len(paths)} --image")
    return [read_image(path) for path in paths]


SEED_LIMIT = 2**63


def seed(text: str) -> int:
    """An argparse type: a whole number in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must lie in 0 .. 2**63 - 1, got {text}")
    return value
