"""Reading what a user hands a command: camera images, arrays, the proprio vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROPRIO_DIM = 8


def parse_proprio(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--proprio must be {PROPRIO_DIM} comma-separated numbers, got {text!r}") from None
    if len(values) != PROPRIO_DIM or not np.all(np.isfinite(values)):
        raise ValueError(f"--proprio must be {PROPRIO_DIM} finite numbers, got {len(values)}: {text!r}")
    return np.asarray(values, np.float64)


def load_npy(path: Path, shape: tuple[int, ...], what: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a .npy array ({exc})") from None
    if array.shape != shape:
        raise ValueError(f"{path}: {what} has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{path}: {what} holds NaN or inf")
    return array.astype(np.float32)


def load_images(paths: list[Path], expected: int) -> list[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    if len(paths) != expected:
        raise ValueError(f"the model takes {expected} images (third-person, then wrist); got {len(paths)} --image")
    images = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as img:
                images.append(np.asarray(img.convert("RGB")))
        except UnidentifiedImageError:
            raise ValueError(f"{path}: not a readable image") from None
    return images
