"""Camera-image preprocessing for RD-VLA policies (spec section 1.2), numpy only.

The authors evaluate (and train) with a TensorFlow pipeline; the robot has no
TensorFlow, so this module re-implements that pipeline step by step in numpy:

1. :func:`resize_for_policy` -- ``tf.image.encode_jpeg`` (quality 95, 4:2:0,
   integer "slow" forward DCT) followed by ``tf.io.decode_image`` (TensorFlow's
   default *INTEGER_FAST* inverse DCT with fancy chroma upsampling), then
   ``tf.image.resize(224x224, "lanczos3", antialias=True)``, round half to even,
   clip to [0, 255], cast to uint8.
2. :func:`center_crop` -- ``convert_image_dtype`` to float32,
   ``tf.image.crop_and_resize`` with the centred box of side sqrt(0.9) to 224x224
   (bilinear), clip to [0, 1], ``convert_image_dtype(uint8, saturate=True)``.
3. :func:`to_pixel_values` -- the Prismatic processor: /255, then per-channel
   (x - mean) / std for DINOv2 (bf16-rounded ImageNet constants) and SigLIP
   (0.5 / 0.5); 6 channels per image, images stacked on the channel axis.

How each step reproduces TensorFlow
-----------------------------------
* JPEG: rather than pushing bytes through a codec, the round trip is emulated
  with the integer arithmetic of libjpeg-turbo (which TensorFlow bundles):
  RGB->YCbCr with 16-bit fixed-point tables, 2x2 chroma averaging with the
  alternating 1/2 rounding bias, edge replication to whole 16x16 MCUs, the
  LL&M integer forward DCT, quantisation with the quality-95 tables (rounded
  division), dequantisation with the AA&N-scaled multipliers of the fast
  integer IDCT, the IDCT itself (8-bit constants, truncating shifts, libjpeg's
  wrap-around range-limit table), "fancy" triangular h2v2 chroma upsampling and
  YCbCr->RGB with the decoder's fixed-point tables.  Pillow cannot be used for
  the decode: it always runs libjpeg's *accurate* IDCT with fancy upsampling,
  whereas TensorFlow defaults to the *fast* IDCT (Pillow's only way to request
  the fast IDCT, draft mode, also disables fancy upsampling).
* Lanczos3: TensorFlow's ``ScaleAndTranslate`` kernel -- half-pixel centres,
  the kernel stretched by the downscale factor (antialias), per-output weights
  computed in float32 and normalised to sum 1, the height pass first and then
  the width pass, each accumulated in float32 in span order.  Spans and
  weights are cached per (input size, output size).
* Crop: TensorFlow's ``CropAndResize`` bilinear kernel, evaluated in float32
  with the same operation order; ``convert_image_dtype`` uses ``x * (1/255)``
  (a float32 multiply, not a division) on the way in and
  ``trunc(clip(x * 255.5, 0, 255))`` on the way out.

The measured agreement with TensorFlow is asserted by
``tests/runtime/test_preprocess.py`` against fixtures written by
``scripts/make_preprocess_fixtures.py``.

Everything here is pure numpy; no TensorFlow, OpenCV or torch is needed on the
robot.  The model casts ``pixel_values`` to bf16 before the vision backbones;
this module returns float32 and leaves that cast to the backend.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_CONFIG",
    "PreprocessConfig",
    "center_crop",
    "jpeg_roundtrip",
    "prepare_image",
    "resize_for_policy",
    "to_pixel_values",
    "validate_image",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Configuration (recorded in the bundle manifest)
# --------------------------------------------------------------------------------------


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
        if self.image_size < 2:
            raise ValueError(f"image_size must be >= 2, got {self.image_size}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
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


DEFAULT_CONFIG = PreprocessConfig()


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Step 1a: JPEG round trip (libjpeg-turbo arithmetic, TensorFlow settings)
# --------------------------------------------------------------------------------------

# JPEG Annex K base quantisation tables (natural row-major order).
_STD_LUMA_QTABLE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int64,
)
_STD_CHROMA_QTABLE = np.full((8, 8), 99, dtype=np.int64)
_STD_CHROMA_QTABLE[:4, :4] = [
    [17, 18, 24, 47],
    [18, 21, 26, 66],
    [24, 26, 56, 99],
    [47, 66, 99, 99],
]


def _quality_table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg ``jpeg_set_quality`` scaling with baseline clamping to [1, 255]."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


def _fix(x: float, bits: int) -> int:
    return int(x * (1 << bits) + 0.5)


# AA&N scale factors (cos(k*pi/16)*sqrt(2), k>0) as a 14-bit fixed-point 8x8 outer product.
_AAN_FACTORS = [1.0] + [math.cos(k * math.pi / 16) * math.sqrt(2) for k in range(1, 8)]
_AAN_SCALES_14 = np.array(
    [[int(round(a * b * (1 << 14))) for b in _AAN_FACTORS] for a in _AAN_FACTORS], dtype=np.int64
)


@functools.lru_cache(maxsize=4)
def _jpeg_tables(quality: int) -> dict[str, np.ndarray]:
    luma_q = _quality_table(_STD_LUMA_QTABLE, quality)
    chroma_q = _quality_table(_STD_CHROMA_QTABLE, quality)
    tables: dict[str, np.ndarray] = {}
    for name, q in (("luma", luma_q), ("chroma", chroma_q)):
        tables[f"{name}_q"] = q
        # Encoder divisor for the LL&M FDCT, whose output is scaled by 8.
        tables[f"{name}_div"] = (q * 8).astype(np.int32)
        # Decoder multiplier for the AA&N IDCT: q * aanscale, 14-bit -> 2 fractional bits.
        tables[f"{name}_ifast"] = ((q * _AAN_SCALES_14 + (1 << 11)) >> 12).astype(np.int32)
    return tables


def _build_color_tables() -> dict[str, np.ndarray]:
    """libjpeg's 16-bit fixed-point colour-conversion lookup tables (int32, 256 entries)."""
    v = np.arange(256, dtype=np.int64)
    half = 1 << 15
    offset = 128 << 16
    x = v - 128
    tables = {
        # Encoder: Y = (yr[R] + yg[G] + yb[B]) >> 16, likewise Cb and Cr.  Cb/Cr use a
        # rounding fudge of one half minus epsilon.
        "yr": _fix(0.29900, 16) * v,
        "yg": _fix(0.58700, 16) * v,
        "yb": _fix(0.11400, 16) * v + half,
        "cbr": -_fix(0.16874, 16) * v,
        "cbg": -_fix(0.33126, 16) * v,
        "cbb": _fix(0.50000, 16) * v + offset + half - 1,  # also R -> Cr
        "crg": -_fix(0.41869, 16) * v,
        "crb": -_fix(0.08131, 16) * v,
        # Decoder: R = Y + cr_r[Cr]; B = Y + cb_b[Cb]; G = Y + ((cb_g[Cb] + cr_g[Cr]) >> 16)
        "cr_r": (_fix(1.40200, 16) * x + half) >> 16,
        "cb_b": (_fix(1.77200, 16) * x + half) >> 16,
        "cr_g": -_fix(0.71414, 16) * x,
        "cb_g": -_fix(0.34414, 16) * x + half,
    }
    out = {k: t.astype(np.int32) for k, t in tables.items()}
    for t in out.values():
        t.setflags(write=False)
    return out


def _build_idct_range_limit() -> np.ndarray:
    """libjpeg's post-IDCT range-limit table, indexed by (value & 1023)."""
    idx = np.arange(1024)
    out = np.zeros(1024, dtype=np.uint8)
    # idx 0..127 -> 128..255 ; 128..511 -> 255 ; 512..895 -> 0 ; 896..1023 -> 0..127
    out[:128] = idx[:128] + 128
    out[128:512] = 255
    out[896:] = idx[896:] - 896
    return out


_COLOR = _build_color_tables()
_IDCT_RANGE_LIMIT = _build_idct_range_limit()


def _rgb_to_ycc(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoder colour conversion of a uint8 RGB image to int32 Y, Cb, Cr planes."""
    t = _COLOR
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    planes = []
    for kr, kg, kb in (("yr", "yg", "yb"), ("cbr", "cbg", "cbb"), ("cbb", "crg", "crb")):
        acc = t[kr].take(r)
        acc += t[kg].take(g)
        acc += t[kb].take(b)
        acc >>= 16
        planes.append(acc)
    return planes[0], planes[1], planes[2]


def _downsample_h2v2(plane: np.ndarray) -> np.ndarray:
    """2x2 box average with libjpeg's alternating (1, 2) rounding bias per output column."""
    s = plane[0::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 0::2] + plane[1::2, 1::2]
    bias = np.empty(s.shape[1], dtype=np.int32)
    bias[0::2] = 1
    bias[1::2] = 2
    return (s + bias) >> 2


def _to_blocks(plane: np.ndarray) -> np.ndarray:
    """(H, W) plane -> (8, 8, n_blocks) array indexed [row, col, block]."""
    h, w = plane.shape
    return np.ascontiguousarray(
        plane.reshape(h // 8, 8, w // 8, 8).transpose(1, 3, 0, 2).reshape(8, 8, -1)
    )


def _from_blocks(blocks: np.ndarray, h: int, w: int) -> np.ndarray:
    return blocks.reshape(8, 8, h // 8, w // 8).transpose(2, 0, 3, 1).reshape(h, w)


def _fdct_islow_1d(d: list[np.ndarray], first_pass: bool) -> list[np.ndarray]:
    """One 1-D pass of the LL&M integer forward DCT (CONST_BITS 13, PASS1_BITS 2)."""

    def c(x: float) -> int:
        return _fix(x, 13)

    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2

    if first_pass:
        shift_odd = 13 - 2

        def even(v: np.ndarray) -> np.ndarray:
            return v << 2

    else:
        shift_odd = 13 + 2

        def even(v: np.ndarray) -> np.ndarray:
            return (v + 2) >> 2

    def descale(v: np.ndarray) -> np.ndarray:
        return (v + (1 << (shift_odd - 1))) >> shift_odd

    out: list[np.ndarray] = [d[0]] * 8
    out[0] = even(tmp10 + tmp11)
    out[4] = even(tmp10 - tmp11)
    z1 = (tmp12 + tmp13) * c(0.541196100)
    out[2] = descale(z1 + tmp13 * c(0.765366865))
    out[6] = descale(z1 - tmp12 * c(1.847759065))

    z1 = tmp4 + tmp7
    z2 = tmp5 + tmp6
    z3 = tmp4 + tmp6
    z4 = tmp5 + tmp7
    z5 = (z3 + z4) * c(1.175875602)
    tmp4 = tmp4 * c(0.298631336)
    tmp5 = tmp5 * c(2.053119869)
    tmp6 = tmp6 * c(3.072711026)
    tmp7 = tmp7 * c(1.501321110)
    z1 = z1 * -c(0.899976223)
    z2 = z2 * -c(2.562915447)
    z3 = z3 * -c(1.961570560) + z5
    z4 = z4 * -c(0.390180644) + z5
    out[7] = descale(tmp4 + z1 + z3)
    out[5] = descale(tmp5 + z2 + z4)
    out[3] = descale(tmp6 + z2 + z3)
    out[1] = descale(tmp7 + z1 + z4)
    return out


def _idct_ifast_1d(d: list[np.ndarray]) -> list[np.ndarray]:
    """One 1-D pass of libjpeg's AA&N fast integer IDCT (8-bit constants, truncation)."""

    def mul(v: np.ndarray, k: int) -> np.ndarray:
        return (v * k) >> 8

    tmp10, tmp11 = d[0] + d[4], d[0] - d[4]
    tmp13 = d[2] + d[6]
    tmp12 = mul(d[2] - d[6], 362) - tmp13  # 2*c4
    tmp0, tmp3 = tmp10 + tmp13, tmp10 - tmp13
    tmp1, tmp2 = tmp11 + tmp12, tmp11 - tmp12

    z13, z10 = d[5] + d[3], d[5] - d[3]
    z11, z12 = d[1] + d[7], d[1] - d[7]
    tmp7 = z11 + z13
    tmp11 = mul(z11 - z13, 362)  # 2*c4
    z5 = mul(z10 + z12, 473)  # 2*c2
    tmp10 = mul(z12, 277) - z5  # 2*(c2-c6)
    tmp12 = mul(z10, -669) + z5  # -2*(c2+c6)
    tmp6 = tmp12 - tmp7
    tmp5 = tmp11 - tmp6
    tmp4 = tmp10 + tmp5
    return [
        tmp0 + tmp7,
        tmp1 + tmp6,
        tmp2 + tmp5,
        tmp3 - tmp4,
        tmp3 + tmp4,
        tmp2 - tmp5,
        tmp1 - tmp6,
        tmp0 - tmp7,
    ]


def _jpeg_plane(plane: np.ndarray, divisor: np.ndarray, ifast_mult: np.ndarray) -> np.ndarray:
    """Encode (ISLOW FDCT + quantise) and decode (IFAST IDCT) one component plane."""
    h, w = plane.shape
    blocks = _to_blocks(plane - 128)  # int32 [row, col, block]
    # Forward DCT: pass 1 over each row (along columns), pass 2 over each column.
    work = np.stack(_fdct_islow_1d([blocks[:, c] for c in range(8)], first_pass=True), axis=1)
    coef = np.stack(_fdct_islow_1d([work[r] for r in range(8)], first_pass=False), axis=0)
    # Quantise: divide by q*8 rounding half away from zero (libjpeg's reciprocal
    # multiplication is exact for every 16-bit input); then dequantise for IFAST.
    div = divisor[:, :, None]
    mag = (np.abs(coef) + (div >> 1)) // div
    deq = np.where(coef < 0, -mag, mag)
    deq *= ifast_mult[:, :, None]
    # Inverse DCT: pass 1 over each column, pass 2 over each row, then >> 5 and range limit.
    work = np.stack(_idct_ifast_1d([deq[r] for r in range(8)]), axis=0)
    out = np.stack(_idct_ifast_1d([work[:, c] for c in range(8)]), axis=1)
    out >>= 5
    out &= 1023
    return _from_blocks(_IDCT_RANGE_LIMIT[out], h, w)


def _upsample_h2v2_fancy(plane: np.ndarray) -> np.ndarray:
    """libjpeg "fancy" (triangle filter) 2x upsampling with edge replication.

    Like libjpeg-turbo, planes at most 2 samples wide are box-upsampled instead.
    """
    p = plane.astype(np.int32)
    if p.shape[1] <= 2:
        return np.repeat(np.repeat(p, 2, axis=0), 2, axis=1)
    up = np.concatenate([p[:1], p[:-1]], axis=0)
    down = np.concatenate([p[1:], p[-1:]], axis=0)
    h, w = p.shape
    colsum = np.empty((2 * h, w), dtype=np.int32)
    colsum[0::2] = 3 * p + up
    colsum[1::2] = 3 * p + down
    left = np.concatenate([colsum[:, :1], colsum[:, :-1]], axis=1)
    right = np.concatenate([colsum[:, 1:], colsum[:, -1:]], axis=1)
    out = np.empty((2 * h, 2 * w), dtype=np.int32)
    out[:, 0::2] = (3 * colsum + left + 8) >> 4
    out[:, 1::2] = (3 * colsum + right + 7) >> 4
    return out


def jpeg_roundtrip(img: np.ndarray, quality: int = 95) -> np.ndarray:
    """Emulate ``tf.io.decode_image(tf.image.encode_jpeg(img))`` with TF defaults.

    Encode: quality ``quality``, YCbCr 4:2:0, accurate integer DCT, no smoothing.
    Decode: fast integer IDCT (TensorFlow's default ``dct_method``), fancy upsampling.
    Returns a uint8 array with the shape of ``img``.
    """
    img = validate_image(img)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    h, w = img.shape[:2]
    tables = _jpeg_tables(int(quality))
    # libjpeg pads to whole 16x16 MCUs: columns are replicated at full resolution
    # before downsampling; rows only up to the 2-row group, after which the
    # *downsampled* planes are padded by repeating their last row.
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
    ch, cw = -(-h // 2), -(-w // 2)  # the downsampled component size
    padded = np.pad(img, ((0, 2 * ch - h), (0, pw - w), (0, 0)), mode="edge")
    y, cb, cr = _rgb_to_ycc(padded)
    y = np.pad(y[:h], ((0, ph - h), (0, 0)), mode="edge")

    y_dec = _jpeg_plane(y, tables["luma_div"], tables["luma_ifast"])[:h, :w]
    chroma = []
    for plane in (cb, cr):
        small = np.pad(_downsample_h2v2(plane), ((0, ph // 2 - ch), (0, 0)), mode="edge")
        dec = _jpeg_plane(small, tables["chroma_div"], tables["chroma_ifast"])
        chroma.append(_upsample_h2v2_fancy(dec[:ch, :cw])[:h, :w].astype(np.uint8))

    return _ycc_to_rgb(y_dec, chroma[0], chroma[1])


def _ycc_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Decoder colour conversion of uint8 Y, Cb, Cr planes to a uint8 RGB image."""
    t = _COLOR
    out = np.empty(y.shape + (3,), dtype=np.int32)
    yi = y.astype(np.int32)
    np.add(yi, t["cr_r"].take(cr), out=out[..., 0])
    g = t["cb_g"].take(cb)
    g += t["cr_g"].take(cr)
    g >>= 16
    np.add(yi, g, out=out[..., 1])
    np.add(yi, t["cb_b"].take(cb), out=out[..., 2])
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


# --------------------------------------------------------------------------------------
# Step 1b: Lanczos3 antialiased resize (TensorFlow ScaleAndTranslate)
# --------------------------------------------------------------------------------------

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


def _lanczos_resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
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
    out = _lanczos_resize(img, size, size)
    np.rint(out, out=out)  # tf.round: half to even
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


# --------------------------------------------------------------------------------------
# Step 2: centre crop (TensorFlow CropAndResize, bilinear)
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Step 3: normalisation into pixel_values
# --------------------------------------------------------------------------------------


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
        img = _center_crop(img, config.crop_scale, size)
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
) -> np.ndarray:
    """Camera images (in camera order, e.g. [third-person, wrist]) -> ``pixel_values``.

    Each image (uint8 HxWx3 RGB, any size) runs through :func:`prepare_image`
    (``center_crop=None`` follows ``config.center_crop``, True by default) and
    the Prismatic processor's normalisation (``x / 255``, then
    ``(x - mean) / std`` in float32), giving 6 channels
    [DINOv2 R, G, B, SigLIP R, G, B]; images are concatenated on the channel
    axis.  Returns C-contiguous float32 of shape
    (1, 6 * len(images), image_size, image_size), e.g. (1, 12, 224, 224) for
    two cameras.  Camera-specific orientation fixes (LIBERO's 180 degree
    rotation, spec 1.1) are the caller's job.
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
    mean, std = _norm_params(config)
    out = np.empty((1, 6 * len(checked), size, size), dtype=_F32)
    for i, img in enumerate(checked):
        ready = prepare_image(img, center_crop=center_crop, config=config)
        chw = ready.transpose(2, 0, 1).astype(_F32) / _F32(255.0)
        chw6 = np.concatenate([chw, chw], axis=0)
        out[0, 6 * i : 6 * i + 6] = (chw6 - mean) / std
    logger.debug("pixel_values for %d image(s): %s", len(images), out.shape)
    return out
