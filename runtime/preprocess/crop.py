"""Step 2, the authors' centre crop: ``tf.image.crop_and_resize`` of the centred box, bilinear.

TensorFlow's ``CropAndResize`` bilinear kernel, evaluated in float32
with the same operation order; ``convert_image_dtype`` uses ``x * (1/255)``
(a float32 multiply, not a division) on the way in and
``trunc(clip(x * 255.5, 0, 255))`` on the way out.
"""

from __future__ import annotations

import functools

import numpy as np

from rdvla.runtime.preprocess.config import DEFAULT_CONFIG, validate_image

_F32 = np.float32


@functools.lru_cache(maxsize=32)
def _crop_coords(
    in_size: int, out_size: int, crop_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low index, high index, lerp) of one axis for the centred crop box."""
    side = np.clip(np.sqrt(_F32(crop_scale)), _F32(0.0), _F32(1.0)).astype(_F32)
    lo = ((_F32(1.0) - side) / _F32(2.0)).astype(_F32)
    hi = (lo + side).astype(_F32)
    if out_size > 1:
        step = ((hi - lo) * _F32(in_size - 1) / _F32(out_size - 1)).astype(_F32)
        base = (lo * _F32(in_size - 1)).astype(_F32)
        pos = (base + (np.arange(out_size, dtype=_F32) * step).astype(_F32)).astype(_F32)
    else:  # C++: 0.5 * (y1 + y2) * (H - 1) in double, stored as float
        pos = np.full(1, 0.5 * float((lo + hi).astype(_F32)) * (in_size - 1), dtype=_F32)
    if pos.min() < 0 or pos.max() > in_size - 1:  # cannot happen for crop_scale <= 1
        raise ValueError("crop box extends outside the image")
    low = np.floor(pos).astype(np.int64)
    high = np.ceil(pos).astype(np.int64)
    lerp = (pos - low.astype(_F32)).astype(_F32)
    for arr in (low, high, lerp):
        arr.setflags(write=False)
    return low, high, lerp


def center_crop(
    img: np.ndarray,
    crop_scale: float = DEFAULT_CONFIG.crop_scale,
    size: int = DEFAULT_CONFIG.image_size,
) -> np.ndarray:
    """Step 2: the authors' ``center_crop_image`` -- crop the centred box of relative
    side ``sqrt(crop_scale)`` and resize it bilinearly to ``size`` x ``size``.

    Returns uint8 (size, size, 3).
    """
    return _center_crop(validate_image(img), crop_scale, size)


def _center_crop(img: np.ndarray, crop_scale: float, size: int) -> np.ndarray:
    if not 0.0 < crop_scale <= 1.0:
        raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    h, w = img.shape[:2]
    # convert_image_dtype(uint8 -> float32): x * float32(1/255)
    f = img.astype(_F32) * _F32(1.0 / 255.0)
    y0, y1, ly = _crop_coords(h, size, float(crop_scale))
    x0, x1, lx = _crop_coords(w, size, float(crop_scale))
    lx3 = lx[None, :, None]
    top_rows = f[y0]
    bot_rows = f[y1]
    tl, tr = top_rows[:, x0], top_rows[:, x1]
    bl, br = bot_rows[:, x0], bot_rows[:, x1]
    top = tl + (tr - tl) * lx3
    bottom = bl + (br - bl) * lx3
    out = top + (bottom - top) * ly[:, None, None]
    np.clip(out, _F32(0.0), _F32(1.0), out=out)
    # convert_image_dtype(float32 -> uint8, saturate=True): trunc(clip(x * 255.5))
    out *= _F32(255.5)
    np.clip(out, _F32(0.0), _F32(255.0), out=out)
    return out.astype(np.uint8)
