"""Step 1b, ``tf.image.resize(..., "lanczos3", antialias=True)`` in float32.

TensorFlow's ``ScaleAndTranslate`` kernel: half-pixel centres,
the kernel stretched by the downscale factor (antialias), per-output weights
computed in float32 and normalised to sum 1, the height pass first and then
the width pass, each accumulated in float32 in span order.  Spans and
weights are cached per (input size, output size).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_F32 = np.float32
_TF_PI = _F32(3.14159265359)


@functools.lru_cache(maxsize=1)
def _libm_sinf() -> Any:
    """The C library's ``sinf`` (what TensorFlow's kernel calls), or None if unavailable.

    glibc's ``sinf`` is not always correctly rounded; calling it (through the
    standard-library ``ctypes``) makes the cached resize weights bit-identical
    to TensorFlow's.  Without it, float64 ``sin`` rounded to float32 is used,
    which differs from glibc in the last bit for ~1% of the weights.
    """
    import ctypes

    for name in (None, "libm.so.6", "libm.dylib"):
        try:
            fn = ctypes.CDLL(name).sinf
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float]
        return fn
    logger.info("C sinf not found; Lanczos weights may differ from TensorFlow in the last bit")
    return None


def _sinf(a: np.ndarray) -> np.ndarray:
    fn = _libm_sinf()
    if fn is None:
        return np.sin(a.astype(np.float64)).astype(_F32)
    return np.frompyfunc(fn, 1, 1)(a).astype(_F32)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """TensorFlow's Lanczos kernel (radius 3) evaluated in float32, same operation order."""
    radius = _F32(3.0)
    x = np.abs(x).astype(_F32)
    a = (_TF_PI * x).astype(_F32)
    b = (a / radius).astype(_F32)
    den = ((_TF_PI * _TF_PI) * x * x).astype(_F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = ((radius * _sinf(a)) * _sinf(b) / den).astype(_F32)
    val = np.where(x <= _F32(1e-3), _F32(1.0), val)
    return np.where(x > radius, _F32(0.0), val).astype(_F32)


@functools.lru_cache(maxsize=32)
def _resize_spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Span starts and float32 weights of one axis, as ``ComputeSpansCore`` builds them.

    Returns ``(index, weights)`` with shapes ``(span, out_size)``: output ``x`` is
    ``sum_k weights[k, x] * input[index[k, x]]`` accumulated for k = 0, 1, ...
    Weights past the real span (and at clamped indices) are zero.
    """
    radius = _F32(3.0)
    scale = _F32(out_size) / _F32(in_size)
    inv_scale = _F32(1.0 / float(scale))
    kernel_scale = max(inv_scale, _F32(1.0))
    support = _F32(radius * kernel_scale)
    span_size = min(2 * int(math.ceil(float(support))) + 1, in_size)

    x = np.arange(out_size)
    sample = ((x.astype(_F32) + _F32(0.5)) * inv_scale).astype(_F32)
    start = np.ceil((sample - support - _F32(0.5)).astype(_F32)).astype(np.int64)
    end = np.floor((sample + support - _F32(0.5)).astype(_F32)).astype(np.int64)
    start = np.clip(start, 0, in_size - 1)
    end = np.clip(end, 0, in_size - 1) + 1

    k = np.arange(span_size)[:, None]
    src = start[None, :] + k
    valid = src < end[None, :]
    pos = ((src.astype(_F32) + _F32(0.5)).astype(_F32) - sample[None, :]).astype(_F32)
    one_over_kernel_scale = _F32(_F32(1.0) / kernel_scale)
    w = _lanczos3((pos * one_over_kernel_scale).astype(_F32))
    w = np.where(valid, w, _F32(0.0)).astype(_F32)
    total = np.zeros(out_size, dtype=_F32)
    for i in range(span_size):  # float32 running sum in span order
        total = (total + w[i]).astype(_F32)
    inv_total = (_F32(1.0) / total).astype(_F32)
    w = (w * inv_total[None, :]).astype(_F32)
    index = np.minimum(src, in_size - 1)
    w.setflags(write=False)
    index.setflags(write=False)
    return index, w


def lanczos_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """float32 (out_h, out_w, C) result of ``tf.image.resize(..., "lanczos3", antialias=True)``."""
    in_h, in_w, chans = img.shape
    src = img.astype(_F32)
    # Height pass first (TensorFlow's GatherRows) ...
    idx, w = _resize_spans(in_h, out_h)
    tmp = np.zeros((out_h, in_w, chans), dtype=_F32)
    for k in range(idx.shape[0]):
        term = src[idx[k]]
        term *= w[k][:, None, None]
        tmp += term
    # ... then the width pass (GatherColumns), done on the transposed intermediate
    # so that every gather copies whole contiguous rows.
    tmp_t = np.ascontiguousarray(tmp.transpose(1, 0, 2))  # (in_w, out_h, C)
    idx, w = _resize_spans(in_w, out_w)
    out_t = np.zeros((out_w, out_h, chans), dtype=_F32)
    for k in range(idx.shape[0]):
        term = tmp_t[idx[k]]
        term *= w[k][:, None, None]
        out_t += term
    return out_t.transpose(1, 0, 2)
