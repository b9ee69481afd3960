"""The whole pipeline for a query's camera images: resize (with its JPEG round trip), crop, normalise."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np

from rdvla.runtime.preprocess.config import DEFAULT_CONFIG, PreprocessConfig, validate_image
from rdvla.runtime.preprocess.crop import center_crop as crop_centre
from rdvla.runtime.preprocess.jpeg import jpeg_roundtrip
from rdvla.runtime.preprocess.lanczos import lanczos_resize
from rdvla.runtime.preprocess.native import pixel_values_into, resolve_implementation

logger = logging.getLogger(__name__)

_F32 = np.float32


def resize_for_policy(
    img: np.ndarray, size: int = DEFAULT_CONFIG.image_size, *, jpeg: bool = True
) -> np.ndarray:
    """Step 1: JPEG round trip, then Lanczos3 antialiased resize to ``size`` x ``size``.

    Mirrors the authors' ``resize_image_for_policy`` (``tf.image.encode_jpeg`` ->
    ``tf.io.decode_image`` -> ``tf.image.resize(lanczos3, antialias=True)`` ->
    round, clip, uint8).  ``jpeg=False`` skips the round trip (diagnostics only).
    Returns uint8 (size, size, 3).
    """
    img = validate_image(img)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if jpeg:
        img = jpeg_roundtrip(img)
    out = lanczos_resize(img, size, size)
    np.rint(out, out=out)  # tf.round: half to even
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def prepare_image(
    img: np.ndarray,
    *,
    center_crop: bool | None = None,
    config: PreprocessConfig = DEFAULT_CONFIG,
) -> np.ndarray:
    """Steps 1-2 for one camera image, as the authors' ``prepare_images_for_vla``.

    An image that is already ``image_size`` square is not resized (the authors
    skip ``resize_image_for_policy`` for such input, including its JPEG round
    trip); any other size goes through :func:`resize_for_policy`.  The centre
    crop runs when ``center_crop`` is true (``None``: ``config.center_crop``).
    Returns uint8 (image_size, image_size, 3).
    """
    img = validate_image(img)
    size = config.image_size
    if img.shape[:2] != (size, size):
        img = resize_for_policy(img, size)
    if config.center_crop if center_crop is None else center_crop:
        img = crop_centre(img, config.crop_scale, size)
    return img


@functools.lru_cache(maxsize=8)
def _norm_params(config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    mean = np.array(config.dino_mean + config.siglip_mean, dtype=_F32).reshape(6, 1, 1)
    std = np.array(config.dino_std + config.siglip_std, dtype=_F32).reshape(6, 1, 1)
    mean.setflags(write=False)
    std.setflags(write=False)
    return mean, std


def to_pixel_values(
    images: Sequence[np.ndarray],
    center_crop: bool | None = None,
    *,
    config: PreprocessConfig = DEFAULT_CONFIG,
    implementation: str | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Camera images (in camera order, e.g. [third-person, wrist]) -> ``pixel_values``.

    Each image (uint8 HxWx3 RGB, any size) runs through :func:`prepare_image`
    (``center_crop=None`` follows ``config.center_crop``, True by default) and
    the Prismatic processor's normalisation (``x / 255``, then
    ``(x - mean) / std`` in float32), giving 6 channels
    [DINOv2 R, G, B, SigLIP R, G, B]; images are concatenated on the channel
    axis: C-contiguous float32 of shape (1, 6 * len(images), image_size,
    image_size), e.g. (1, 12, 224, 224) for two cameras, written into ``out``
    when given (e.g. a backend's staging buffer) and returned.
    ``implementation``: ``native`` (C++), ``numpy``, or None for native where
    it is built; both give the same bits. Camera-specific orientation fixes
    (LIBERO's 180 degree rotation, spec 1.1) are the caller's job.
    """
    if isinstance(images, np.ndarray):
        raise ValueError(
            "images must be a sequence of (H, W, 3) uint8 arrays (one per camera), "
            "not a single array; wrap a single image in a list"
        )
    if len(images) == 0:
        raise ValueError("images must contain at least one image")
    checked = [validate_image(img, name=f"images[{i}]") for i, img in enumerate(images)]
    size = config.image_size
    shape = (1, 6 * len(checked), size, size)
    if out is None:
        out = np.empty(shape, dtype=_F32)
    elif out.shape != shape or out.dtype != _F32 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out must be a writable C-contiguous float32 array of shape {shape}, got {out.dtype} {out.shape}")
    crop = config.center_crop if center_crop is None else center_crop
    if resolve_implementation(implementation) == "native":
        pixel_values_into(checked, out, config, crop)
        return out
    mean, std = _norm_params(config)
    for i, img in enumerate(checked):
        ready = prepare_image(img, center_crop=crop, config=config)
        chw = ready.transpose(2, 0, 1).astype(_F32) / _F32(255.0)
        chw6 = np.concatenate([chw, chw], axis=0)
        out[0, 6 * i : 6 * i + 6] = (chw6 - mean) / std
    logger.debug("pixel_values for %d image(s) in numpy: %s", len(images), out.shape)
    return out
