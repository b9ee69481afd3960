"""Step 1a, the JPEG round trip of ``tf.image.encode_jpeg`` + ``tf.io.decode_image``, emulated.

Rather than pushing bytes through a codec, the round trip is emulated with the integer arithmetic of libjpeg-turbo (which TensorFlow bundles):
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
"""

from __future__ import annotations

import functools
import math

import numpy as np

from rdvla.runtime.preprocess.config import validate_image

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
