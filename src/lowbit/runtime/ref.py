"""Numpy reference twins of the compiled kernels: the living spec.

Written for clarity, not speed.  Every C++ kernel in ``csrc/`` must give exactly what the
function of the same name here gives (tests/runtime compare them on shapes that hit every
edge of a 64-bit word).

Bit-packing convention (docs/design.md, binding for the whole project):

* values are packed along the **last axis**, 64 per ``uint64`` word: element ``j*64 + i``
  is bit ``i`` (LSB first) of word ``j``; ``(..., K)`` -> ``(..., ceil(K/64))``;
* bit 1 <-> +1 <-> ``x >= 0`` (so sign(0) = +1, -0.0 included); bit 0 <-> -1 <-> ``x < 0``;
* pad bits ``K .. 64*ceil(K/64) - 1`` of the last word are 0;
* NaN has no sign and is refused.

Binary dot product of two packed ±1 rows of length K (XNOR-Net, BNN):
``dot(a, b) = K - 2 * popcount(a XOR b)``, exact for any K because the pad bits are 0 in
both operands.
"""
from __future__ import annotations

import numpy as np

WORD_BITS = 64

# Element types bitpack accepts (the compiled kernels are instantiated for exactly these).
PACK_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int8), np.dtype(np.int32))
UNPACK_DTYPES = (np.dtype(np.int8), np.dtype(np.float32))


def words_for(k: int) -> int:
    """Number of uint64 words that hold k bits: ceil(k / 64)."""
    return (k + WORD_BITS - 1) // WORD_BITS


def pad_mask(k: int) -> np.uint64:
    """Mask of the bits of the last word that lie past k (they must be 0); 0 if none."""
    used = k % WORD_BITS
    if used == 0:
        return np.uint64(0)
    return np.uint64(~((1 << used) - 1) & 0xFFFF_FFFF_FFFF_FFFF)


def bitpack(x: np.ndarray) -> np.ndarray:
    """Signs of x (..., K) -> (..., ceil(K/64)) uint64, bit 1 = (x >= 0)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("bitpack: x must have at least one axis (values are packed along the last)")
    if x.dtype.kind == "f" and np.isnan(x).any():
        raise ValueError("bitpack: x contains NaN, which has no sign")
    k = x.shape[-1]
    w = words_for(k)
    bits = x >= 0                                                  # (..., K) bool
    padded = np.zeros(x.shape[:-1] + (w * WORD_BITS,), dtype=np.uint64)
    padded[..., :k] = bits                                         # pad bits stay 0
    padded = padded.reshape(x.shape[:-1] + (w, WORD_BITS))         # (..., W, 64)
    shifts = np.arange(WORD_BITS, dtype=np.uint64)                 # bit i of each word
    return (padded << shifts).sum(axis=-1, dtype=np.uint64)        # (..., W) uint64


def unpack(words: np.ndarray, k: int, dtype=np.int8) -> np.ndarray:
    """(..., ceil(k/64)) uint64 -> (..., k) of +1 / -1 in dtype (int8 or float32)."""
    words = np.asarray(words, dtype=np.uint64)
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    bits = (words[..., None] >> shifts) & np.uint64(1)             # (..., W, 64)
    bits = bits.reshape(words.shape[:-1] + (words.shape[-1] * WORD_BITS,))[..., :k]
    return np.where(bits == 1, 1, -1).astype(dtype)                # (..., k)


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 element (same shape, int64)."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):                               # numpy >= 2.0
        return np.bitwise_count(x).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    as_bytes = x[..., None].view(np.uint8)                         # (..., 8)
    return table[as_bytes].sum(axis=-1)


def bgemm(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Packed ±1 matrix product: a (M, W), b (N, W) uint64 -> (M, N) int32,
    out[m, n] = k - 2 * popcount(a[m] XOR b[n]) = sum_i a_i * b_i over the k values."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    for m in range(a.shape[0]):                                    # one row at a time: (N, W)
        differ = popcount(a[m][None, :] ^ b).sum(axis=-1)          # (N,) positions that differ
        out[m] = k - 2 * differ
    return out


# ==== bitwise conv2d / dense, output stages, pooling, bit planes (csrc/bconv) =============
#
# Layout: activations NHWC with channels packed, (N, H, W, ceil(C/64)) uint64; weights
# (OC, KH, KW, ceil(C/64)) uint64, packed along C per tap.  Dense layers are the same with
# H = W = KH = KW = 1.  The functions below compute the products from *unpacked integers*
# (the definition); the compiled kernels get the same numbers through XOR-popcounts
# (csrc/bconv/bconv.h derives each identity).

OUT_KINDS = ("int32", "bits", "float")


def conv_output_size(size: int, k: int, stride: int, padding: int) -> int:
    """Output length along one axis: floor((size + 2*padding - k) / stride) + 1."""
    return (size + 2 * padding - k) // stride + 1


def pair(v, name: str = "value") -> tuple[int, int]:
    """An int or a pair of ints -> (a, b)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def int_conv2d(x: np.ndarray, w: np.ndarray, stride=1, padding=0, pad_value: int = 0) -> np.ndarray:
    """Integer conv2d, NHWC x (N, H, W, C) by w (OC, KH, KW, C) -> (N, OH, OW, OC) int64.

    Spatial padding with the value ``pad_value`` (0 = torch's zero padding)."""
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(w, dtype=np.int64)
    n, h, wd, c = x.shape
    oc, kh, kw, _ = w.shape
    xp = np.full((n, h + 2 * ph, wd + 2 * pw, c), pad_value, dtype=np.int64)
    xp[:, ph:ph + h, pw:pw + wd, :] = x
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=np.int64)         # implicit im2col, tap-major
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
    return cols.reshape(n, oh, ow, kh * kw * c) @ w.reshape(oc, kh * kw * c).T


def unpack_bits01(words: np.ndarray, k: int) -> np.ndarray:
    """(..., ceil(k/64)) uint64 -> (..., k) of 0 / 1 (int64)."""
    return (unpack(words, k, np.int8).astype(np.int64) + 1) // 2


def planes_to_levels(planes: np.ndarray, k: int) -> np.ndarray:
    """Bit planes (..., bits, ceil(k/64)) -> unsigned levels (..., k) = sum_n 2^n plane_n."""
    bits = planes.shape[-2]
    b01 = unpack_bits01(planes, k)                                    # (..., bits, k)
    weights = (np.int64(1) << np.arange(bits, dtype=np.int64))[:, None]
    return (b01 * weights).sum(axis=-2)                               # (..., k)


def pack_bitplanes(x: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned levels x (..., K), 0 <= x < 2^bits -> (..., bits, ceil(K/64)) uint64 bit planes,
    plane n = bit n of the level, packed like bitpack (bit 1 = 1, pad bits 0)."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("pack_bitplanes: x must have at least one axis")
    xi = x.astype(np.int64)
    if xi.size and (xi.min() < 0 or xi.max() >= (1 << bits)):
        raise ValueError(f"pack_bitplanes: levels must be in [0, 2**{bits}), got [{xi.min()}, {xi.max()}]")
    planes = [(xi >> b) & 1 for b in range(bits)]                     # bits x (..., K)
    signs = [np.where(p == 1, 1, -1).astype(np.int8) for p in planes]
    return np.stack([bitpack(s) for s in signs], axis=-2)             # (..., bits, W)


def ternary_values(w_sign: np.ndarray, w_mask: np.ndarray, k: int) -> np.ndarray:
    """Two bit planes -> ternary values (..., k) in {-1, 0, +1}: mask 0 -> 0, else sign."""
    s = unpack(w_sign, k, np.int8).astype(np.int64)
    m = unpack_bits01(w_mask, k)
    return s * m


def bits_from_threshold(acc: np.ndarray, thr: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """Packed bits (..., ceil(OC/64)): bit = (acc <= thr) where flip else (acc >= thr)."""
    acc = np.asarray(acc, dtype=np.int64)
    thr = np.asarray(thr, dtype=np.int64)
    flip = np.asarray(flip).astype(bool)
    bit = np.where(flip, acc <= thr, acc >= thr)
    return bitpack(np.where(bit, 1, -1).astype(np.int8))


def apply_stage(acc: np.ndarray, out: str = "int32", threshold=None, scale=None, bias=None):
    """The fused output stages on integer accumulators (..., OC):

    * ``int32``: acc as int32;
    * ``bits``: ``threshold = (thr, flip)``; bit oc = acc <= thr[oc] if flip[oc] else
      acc >= thr[oc]; packed (..., ceil(OC/64)) uint64, pad bits 0;
    * ``float``: float32(acc) * scale[oc] + bias[oc] in float32 (two roundings, no FMA)."""
    if out == "int32":
        return acc.astype(np.int32)
    if out == "bits":
        thr, flip = threshold
        return bits_from_threshold(acc, thr, flip)
    if out == "float":
        y = acc.astype(np.float32) * np.asarray(scale, dtype=np.float32)
        if bias is not None:
            y = y + np.asarray(bias, dtype=np.float32)
        return y.astype(np.float32)
    raise ValueError(f"out must be one of {OUT_KINDS}, got {out!r}")


def binary_conv2d(x, w, c: int, stride=1, padding=0, pad_value: int = 0, out: str = "int32",
                  threshold=None, scale=None, bias=None):
    """±1 conv2d on packed NHWC words: x (N, H, W, ceil(c/64)), w (OC, KH, KW, ceil(c/64))
    -> stage of acc = sum of (±1)(±1) products, spatial padding with ``pad_value`` (0 =
    torch's F.conv2d zero padding, -1 = padding with the bit 0)."""
    xs = unpack(np.asarray(x, dtype=np.uint64), c, np.int8)           # (N, H, W, C)
    ws = unpack(np.asarray(w, dtype=np.uint64), c, np.int8)           # (OC, KH, KW, C)
    acc = int_conv2d(xs, ws, stride, padding, pad_value)
    return apply_stage(acc, out, threshold, scale, bias)


def ternary_conv2d(x, w_sign, w_mask, c: int, stride=1, padding=0, pad_value: int = 0,
                   out: str = "int32", threshold=None, scale=None, bias=None):
    """±1 activations x (N, H, W, ceil(c/64)) by ternary weights given as a sign plane and a
    nonzero-mask plane, each (OC, KH, KW, ceil(c/64)) (bit 1 = +1 / nonzero)."""
    xs = unpack(np.asarray(x, dtype=np.uint64), c, np.int8)
    wt = ternary_values(np.asarray(w_sign, dtype=np.uint64), np.asarray(w_mask, dtype=np.uint64), c)
    acc = int_conv2d(xs, wt, stride, padding, pad_value)
    return apply_stage(acc, out, threshold, scale, bias)


def bitplane_conv2d(x_planes, w, c: int, w_bits: int | None = None, stride=1, padding=0,
                    out: str = "int32", threshold=None, scale=None, bias=None):
    """Unsigned activations as bit planes x_planes (N, H, W, a_bits, ceil(c/64)) by
    ±1 weights w (OC, KH, KW, ceil(c/64)) (w_bits None: BNN first layer, DoReFa 1-bit
    weights) or unsigned w_bits-bit weights as planes (OC, KH, KW, w_bits, ceil(c/64))
    (DoReFa).  Zero padding (activation level 0)."""
    xl = planes_to_levels(np.asarray(x_planes, dtype=np.uint64), c)   # (N, H, W, C)
    w = np.asarray(w, dtype=np.uint64)
    wl = unpack(w, c, np.int8) if w_bits is None else planes_to_levels(w, c)
    acc = int_conv2d(xl, wl, stride, padding, 0)
    return apply_stage(acc, out, threshold, scale, bias)


def binary_dense(x, w, k: int, out: str = "int32", threshold=None, scale=None, bias=None):
    """x (M, ceil(k/64)) by w (OC, ceil(k/64)), ±1 -> stage of x @ w.T."""
    xs = unpack(np.asarray(x, dtype=np.uint64), k, np.int8).astype(np.int64)
    ws = unpack(np.asarray(w, dtype=np.uint64), k, np.int8).astype(np.int64)
    return apply_stage(xs @ ws.T, out, threshold, scale, bias)


def ternary_dense(x, w_sign, w_mask, k: int, out: str = "int32", threshold=None, scale=None,
                  bias=None):
    xs = unpack(np.asarray(x, dtype=np.uint64), k, np.int8).astype(np.int64)
    wt = ternary_values(np.asarray(w_sign, dtype=np.uint64), np.asarray(w_mask, dtype=np.uint64), k)
    return apply_stage(xs @ wt.T, out, threshold, scale, bias)


def bitplane_dense(x_planes, w, k: int, w_bits: int | None = None, out: str = "int32",
                   threshold=None, scale=None, bias=None):
    """x_planes (M, a_bits, ceil(k/64)) unsigned levels by ±1 w (OC, ceil(k/64)) or unsigned
    w (OC, w_bits, ceil(k/64))."""
    xl = planes_to_levels(np.asarray(x_planes, dtype=np.uint64), k)
    w = np.asarray(w, dtype=np.uint64)
    wl = unpack(w, k, np.int8).astype(np.int64) if w_bits is None else planes_to_levels(w, k)
    return apply_stage(xl @ wl.T, out, threshold, scale, bias)


def binary_maxpool2d(x, kernel, stride=None, padding=0) -> np.ndarray:
    """Max pooling of ±1 activations on packed words x (N, H, W, Cw): the max of ±1 values
    is the OR of their bits; out-of-image taps are ignored (torch pads with -inf)."""
    kh, kw = pair(kernel, "kernel")
    sh, sw = pair(kernel if stride is None else stride, "stride")
    ph, pw = pair(padding, "padding")
    x = np.asarray(x, dtype=np.uint64)
    n, h, wd, cw = x.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(wd, kw, sw, pw)
    out = np.zeros((n, oh, ow, cw), dtype=np.uint64)
    for y in range(oh):
        for xo in range(ow):
            for i in range(kh):
                for j in range(kw):
                    iy, ix = y * sh - ph + i, xo * sw - pw + j
                    if 0 <= iy < h and 0 <= ix < wd:
                        out[:, y, xo, :] |= x[:, iy, ix, :]
    return out


# ---- sign(BatchNorm(acc)) as integer thresholds: lowbit.codec.fold (numpy only) ---------

from lowbit.codec.fold import INT32_MIN, bn_eval_fn, fold_bn_threshold, fold_threshold  # noqa: E402,F401
