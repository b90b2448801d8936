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
