"""The constants of the image pipeline (recorded in the bundle's manifest) and the input check."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

@dataclass(frozen=True)
class PreprocessConfig:
    """Constants of the RD-VLA image pipeline; ``to_manifest()`` goes into the bundle.

    Only ``image_size``, ``crop_scale``, ``center_crop`` and the normalisation
    constants are free parameters of this implementation; the JPEG and resize
    fields document the (fixed) TensorFlow behaviour that is reproduced.
    """

    image_size: int = 224
    center_crop: bool = True
    crop_scale: float = 0.9  # area fraction; the box side is sqrt(crop_scale)
    jpeg_quality: int = 95
    jpeg_chroma_subsampling: str = "4:2:0"
    jpeg_encode_dct: str = "integer-accurate (libjpeg JDCT_ISLOW)"
    jpeg_decode_dct: str = "integer-fast (libjpeg JDCT_IFAST, TensorFlow's default)"
    jpeg_fancy_upsampling: bool = True
    resize_method: str = "lanczos3"
    resize_antialias: bool = True
    crop_method: str = "bilinear (tf.image.crop_and_resize)"
    dino_mean: tuple[float, float, float] = (0.484375, 0.455078125, 0.40625)
    dino_std: tuple[float, float, float] = (0.228515625, 0.2236328125, 0.224609375)
    siglip_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    siglip_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    channels_per_image: int = 6  # [DINOv2 RGB, SigLIP RGB]

    def __post_init__(self) -> None:
        if not (isinstance(self.image_size, int) and not isinstance(self.image_size, bool) and 2 <= self.image_size <= 4096):
            raise ValueError(f"image_size must be a whole number in 2..4096, got {self.image_size!r}")
        if not (_is_number(self.crop_scale) and 0.0 < self.crop_scale <= 1.0):
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale!r}")
        if not isinstance(self.center_crop, bool):
            raise ValueError(f"center_crop must be true or false, got {self.center_crop!r}")
        for name in ("dino_mean", "dino_std", "siglip_mean", "siglip_std"):
            values = getattr(self, name)
            if not (isinstance(values, tuple) and len(values) == 3 and all(_is_number(v) and math.isfinite(v) for v in values)):
                raise ValueError(f"{name} must be three finite numbers, got {values!r}")
        if self.jpeg_quality != 95 or self.jpeg_chroma_subsampling != "4:2:0":
            raise ValueError("only TensorFlow's JPEG defaults (quality 95, 4:2:0) are implemented")
        if self.resize_method != "lanczos3" or not self.resize_antialias:
            raise ValueError("only lanczos3 with antialias is implemented")
        if self.channels_per_image != 6:
            raise ValueError("channels_per_image is fixed at 6 ([DINOv2 RGB, SigLIP RGB])")
        for name in ("dino_std", "siglip_std"):
            if any(s <= 0 for s in getattr(self, name)):
                raise ValueError(f"{name} must be positive")

    def to_manifest(self) -> dict[str, Any]:
        """JSON-serialisable dict of every constant (tuples become lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_manifest`; unknown keys are rejected."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing keys in manifest: {sorted(unknown)}")
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**kwargs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


DEFAULT_CONFIG = PreprocessConfig()


def validate_image(img: Any, name: str = "image") -> np.ndarray:
    """Check that ``img`` is a uint8 HxWx3 RGB numpy array and return it (C-contiguous)."""
    if not isinstance(img, np.ndarray):
        raise ValueError(
            f"{name} must be a numpy.ndarray (H, W, 3) uint8 RGB, got {type(img).__name__}"
        )
    if img.dtype != np.uint8:
        raise ValueError(
            f"{name} must have dtype uint8 (0..255 RGB), got {img.dtype}; "
            "convert float images with (x * 255).round().astype(np.uint8) first"
        )
    if img.ndim != 3:
        raise ValueError(
            f"{name} must have shape (H, W, 3), got {img.shape}"
            + ("; grayscale images must be stacked to 3 channels" if img.ndim == 2 else "")
        )
    if img.shape[2] != 3:
        hint = ""
        if img.shape[2] == 4:
            hint = "; drop the alpha channel (img[..., :3])"
        elif img.shape[0] in (3, 4) and img.shape[2] not in (3, 4):
            hint = "; channel-first input? use img.transpose(1, 2, 0)"
        raise ValueError(f"{name} must have 3 (RGB) channels last, got shape {img.shape}{hint}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels, got {img.shape[:2]}")
    return np.ascontiguousarray(img)
