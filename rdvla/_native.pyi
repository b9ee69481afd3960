"""Type stub of the native extension rdvla._native (native/python/bindings.cpp).

Bit-exact C++ port of runtime/preprocess.py.  Every array argument is checked (numpy,
host memory, dtype, shape, C-contiguous) and a bad one raises ValueError naming it; no
argument is copied or converted.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

def preprocess_into(
    images: Sequence[npt.NDArray[np.uint8]],
    out: npt.NDArray[np.float32],
    *,
    image_size: int,
    center_crop: bool,
    crop_scale: float,
    dino_mean: tuple[float, float, float],
    dino_std: tuple[float, float, float],
    siglip_mean: tuple[float, float, float],
    siglip_std: tuple[float, float, float],
) -> None:
    """to_pixel_values for the camera images (uint8 HxWx3 each), one thread per image,
    written into ``out``: float32 C-contiguous (1, 6 * len(images), image_size, image_size)."""

def jpeg_roundtrip(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """tf.io.decode_image(tf.image.encode_jpeg(image)) through libjpeg-turbo."""

def resize_for_policy(
    image: npt.NDArray[np.uint8], size: int, *, jpeg: bool = True
) -> npt.NDArray[np.uint8]:
    """JPEG round trip (unless ``jpeg=False``), then Lanczos3 antialiased resize to size x size."""

def center_crop(image: npt.NDArray[np.uint8], crop_scale: float, size: int) -> npt.NDArray[np.uint8]:
    """Centre crop of relative area ``crop_scale`` resized bilinearly to size x size."""
