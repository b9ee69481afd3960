"""The C++ host path (`rdvla._native`, built by `pip install` from native/ through CMakeLists.txt):
the same pipeline bit for bit, through libjpeg-turbo itself, one thread per camera, written
straight into the caller's buffer. The numpy modules beside this one are its executable
specification and the fallback where the extension was not built."""

from __future__ import annotations

import functools
import logging
from types import ModuleType
from typing import Optional, Sequence

import numpy as np

from rdvla.runtime.preprocess.config import PreprocessConfig

log = logging.getLogger(__name__)

IMPLEMENTATIONS = ("native", "numpy")


@functools.lru_cache(maxsize=1)
def native_extension() -> Optional[ModuleType]:
    """The extension module, or None (logged once) where it was not built."""
    try:
        from rdvla import _native
    except ImportError as exc:
        log.warning("the native preprocessing extension is not built (%s): preprocessing runs in numpy, about 15x "
                    "slower; reinstall with a C++ compiler, CMake and libjpeg-turbo's headers (scripts/install.sh)", exc)
        return None
    return _native


def resolve_implementation(implementation: Optional[str]) -> str:
    """`native` or `numpy`; None picks native where it is built."""
    if implementation is None:
        return "native" if native_extension() is not None else "numpy"
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown preprocessing implementation {implementation!r}; choose native or numpy")
    if implementation == "native" and native_extension() is None:
        raise ValueError("the native preprocessing extension is not built: reinstall rdvla with a C++ compiler, CMake "
                         "and libjpeg-turbo's headers (scripts/install.sh), or choose numpy")
    return implementation


def pixel_values_into(images: Sequence[np.ndarray], out: np.ndarray, config: PreprocessConfig, center_crop: bool) -> None:
    """Run the C++ pipeline for `images` into `out` (float32, C-contiguous, (1, 6 * n, S, S))."""
    extension = native_extension()
    assert extension is not None, "resolve_implementation() first"
    extension.preprocess_into(
        list(images), out, image_size=config.image_size, center_crop=center_crop, crop_scale=config.crop_scale,
        dino_mean=config.dino_mean, dino_std=config.dino_std, siglip_mean=config.siglip_mean, siglip_std=config.siglip_std,
    )
