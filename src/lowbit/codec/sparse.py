"""Relative-index sparse structure (Deep Compression, Han et al. 2016, Fig. 2).

A layer's weights are flattened (C order) and only the entries at non-zero positions are kept.
Each kept entry stores its **gap**: the number of zero positions skipped since the previous
kept entry (or since the start).  Gaps are ``bits``-bit unsigned integers; the largest value
``F = 2**bits - 1`` is the **filler**: an entry that skips ``F`` zeros and carries no value.
A run of ``z`` zeros before a kept entry is therefore written as ``z // F`` fillers followed by
the entry with gap ``z % F``.  Trailing zeros after the last kept entry cost nothing (the
decoder knows the layer size).

Difference from the paper: the paper's filler is a stored zero *weight* (it needs a value slot
and, with weight sharing, a codebook entry for 0); here a filler carries no value at all, so
value streams hold exactly the non-zero weights and every one of the 2**b centroids stays
usable.  ``bits`` is configurable (paper: 8 for conv, 5 for fc; 5 for both LeNets).
"""
from __future__ import annotations

import numpy as np

from lowbit.codec.container import FormatError


def filler(bits: int) -> int:
    """The gap value that marks a filler entry for ``bits``-bit gaps."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"index bits must be an integer in 1..16, got {bits!r}")
    return (1 << bits) - 1


def encode(positions: np.ndarray, bits: int) -> np.ndarray:
    """Gaps (uint16, fillers included) for strictly increasing flat ``positions``."""
    f = filler(bits)
    p = np.asarray(positions, dtype=np.int64).reshape(-1)
    if p.size == 0:
        return np.zeros(0, dtype=np.uint16)
    if p[0] < 0 or (p.size > 1 and np.any(np.diff(p) <= 0)):
        raise ValueError("positions must be non-negative and strictly increasing")
    skip = np.diff(p, prepend=-1) - 1
    nfill = skip // f
    last = np.cumsum(nfill + 1) - 1  # where each real entry lands in the output
    out = np.full(int(last[-1]) + 1, f, dtype=np.uint16)
    out[last] = skip % f
    return out


def decode(gaps: np.ndarray, bits: int, size: int) -> np.ndarray:
    """Flat positions (int64) of the kept entries; refuses malformed streams."""
    f = filler(bits)
    g = np.asarray(gaps).astype(np.int64).reshape(-1)
    if g.size == 0:
        return np.zeros(0, dtype=np.int64)
    if g.min() < 0 or g.max() > f:
        raise FormatError(f"sparse index: gap values must lie in [0, {f}], "
                          f"got [{int(g.min())}, {int(g.max())}]")
    if g[-1] == f:
        raise FormatError("sparse index: the stream ends with a filler entry")
    real = g != f
    ends = np.cumsum(np.where(real, g + 1, f))
    pos = ends[real] - 1
    if pos[-1] >= size:
        raise FormatError(f"sparse index: position {int(pos[-1])} is outside a layer of "
                          f"{size} weights")
    return pos


def entries(positions: np.ndarray, bits: int) -> int:
    """How many entries (kept + fillers) ``encode`` produces, without building them."""
    f = filler(bits)
    p = np.asarray(positions, dtype=np.int64).reshape(-1)
    if p.size == 0:
        return 0
    skip = np.diff(p, prepend=-1) - 1
    return int(p.size + (skip // f).sum())
