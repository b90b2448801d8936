"""Folding BatchNorm into what follows it, exactly (numpy only; no torch, no runtime).

Written by ``lowbit.train`` at export, read by ``lowbit.runtime`` at load.

- ``bn_affine`` / ``bn_apply`` / ``batchnorm``: torch 2.13's eval BatchNorm bit for bit;
- ``fold_bn_threshold``: sign(BatchNorm(acc)) of an exact integer accumulator as per-channel
  integer thresholds (``thr``, ``flip``), ties included;
- ``fold_float_threshold``: sign(BatchNorm(x)) of a float32 x as per-channel float thresholds;
- ``fold_sign_bn`` (``lowbit.codec.foldpass``): the graph pass that applies the integer fold.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32

def bn_affine(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 (a, b) of torch 2.13's eval BatchNorm: y = f32(f64(x) * a + b),
    a and b themselves rounded to float32 as torch computes them.  Constant per layer:
    the runtime computes it once at load."""
    f64 = np.float64
    invstd = (F32(1) / np.sqrt(np.asarray(var, F32) + F32(eps))).astype(F32)
    a = (invstd * np.asarray(gamma, F32)).astype(F32)
    b = (np.asarray(beta, F32).astype(f64) - np.asarray(mean, F32).astype(f64) * a.astype(f64)).astype(F32)
    return a.astype(f64), b.astype(f64)


def bn_apply(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``bn_affine``'s (a, b) applied along axis 1 (NCHW or (N, C))."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x.astype(np.float64) * a.reshape(shape) + b.reshape(shape)).astype(F32)


def batchnorm(x: np.ndarray, gamma, beta, mean, var, eps: float) -> np.ndarray:
    """torch 2.13 eval BatchNorm bit for bit (lowbit.runtime.ref.bn_eval_fn), channel axis 1."""
    return bn_apply(x, *bn_affine(gamma, beta, mean, var, eps))


_INF_KEY = 0x7F800000     # the ordered key of +inf
_MAX_KEY = 0x7F7FFFFF     # the largest finite float32


def _key_to_f32(k: np.ndarray) -> np.ndarray:
    """Ordered int keys in [-inf key, +inf key] -> float32 (k < 0: -value(-k))."""
    mag = np.abs(k).astype(np.int32).view(np.float32)
    return np.where(k < 0, -mag, mag).astype(np.float32)


def fold_float_threshold(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 (t, s) with sign(BatchNorm(x)) = +1  <=>  s * (x - t) >= 0 for every
    float32 x, exactly as :func:`batchnorm` (= torch eval) computes it, ties included: a
    bisection over the ordered float32 values (BN is monotone in x per channel).  s = +1 for
    increasing channels (t the smallest x with bit 1), -1 for decreasing ones (t the largest);
    constant channels get t = -inf (always 1) or +inf with s = +1 (never)."""
    g = np.asarray(gamma, F32)
    c = g.shape[0]

    def bit(keys):                                   # keys (c,) int64 -> bool (c,)
        x = _key_to_f32(keys)[None, :]
        with np.errstate(over="ignore", invalid="ignore"):
            return batchnorm(x, gamma, beta, mean, var, eps)[0] >= 0

    lo_bit = bit(np.full(c, -_MAX_KEY, np.int64))       # finite ends: inf * 0 would be NaN
    hi_bit = bit(np.full(c, _MAX_KEY, np.int64))
    inc, dec = ~lo_bit & hi_bit, lo_bit & ~hi_bit
    lo, hi = np.full(c, -_MAX_KEY, np.int64), np.full(c, _MAX_KEY, np.int64)
    while True:
        todo = (inc | dec) & (hi - lo > 1)
        if not todo.any():
            break
        mid = (lo + hi) // 2
        b = bit(mid)
        up = np.where(inc, ~b, b)
        lo, hi = np.where(todo & up, mid, lo), np.where(todo & ~up, mid, hi)
    t = np.where(lo_bit & hi_bit, -np.inf, np.inf).astype(F32)
    t[inc] = _key_to_f32(hi[inc])
    t[dec] = _key_to_f32(lo[dec])
    s = np.where(dec, F32(-1), F32(1)).astype(F32)
    return t, s


# ---- sign(BatchNorm(acc)) as integer thresholds ---------------------------------------------

INT32_MIN = -(1 << 31)


def fold_threshold(fn, k_max: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer thresholds equivalent to ``bit = fn(acc) >= 0`` for every integer accumulator
    ``|acc| <= k_max``, per channel.

    ``fn(acc)`` takes an int64 array (m, channels) and returns the float values (m, channels)
    computed exactly as training computes them (e.g. ``bn_eval_fn``); it must be monotone in
    acc per channel, which any chain of correctly rounded affine float ops is (NaN counts as
    < 0).  The result is exact for *that* float formula, ties included (fn = 0 -> bit 1, as
    sign(0) = +1), found by bisection on the integers and checked against fn.

    Returns ``(thr int32 (channels,), flip uint8 (channels,))`` for the ``bits`` stage:
    bit = acc <= thr if flip else acc >= thr.  Increasing channels (gamma > 0) get flip 0,
    decreasing ones (gamma < 0) flip 1; constant channels (gamma = 0, or a threshold past
    ±k_max) get thr = INT32_MIN with flip 0 (always 1) or flip 1 (never, |acc| < 2^31)."""
    k_max = int(k_max)
    if k_max < 0 or k_max > (1 << 30):
        raise ValueError(f"k_max must be in [0, 2**30], got {k_max}")
    cols = np.arange(channels)

    def bit(acc):                                                    # acc (m, channels)
        y = np.asarray(fn(np.asarray(acc, dtype=np.int64)))
        if y.shape != acc.shape:
            raise ValueError(f"fold_threshold: fn returned shape {y.shape}, expected {acc.shape}")
        return y >= 0                                                # NaN -> False

    ends = bit(np.array([[-k_max] * channels, [k_max] * channels]))  # (2, channels)
    lo_bit, hi_bit = ends[0], ends[1]
    thr = np.full(channels, INT32_MIN, dtype=np.int64)
    flip = np.zeros(channels, dtype=np.uint8)
    flip[~lo_bit & ~hi_bit] = 1                                      # never 1
    inc = ~lo_bit & hi_bit                                           # smallest acc with bit 1
    dec = lo_bit & ~hi_bit                                           # largest acc with bit 1
    # bisection on [lo, hi]: inc: bit(lo) = 0, bit(hi) = 1; dec: bit(lo) = 1, bit(hi) = 0
    lo = np.full(channels, -k_max, dtype=np.int64)
    hi = np.full(channels, k_max, dtype=np.int64)
    active = inc | dec
    while True:
        todo = active & (hi - lo > 1)
        if not todo.any():
            break
        mid = (lo + hi) // 2
        b = bit(np.where(todo, mid, 0)[None, :])[0]
        up = np.where(inc, ~b, b)                                    # threshold lies above mid
        lo = np.where(todo & up, mid, lo)
        hi = np.where(todo & ~up, mid, hi)
    thr[inc] = hi[inc]
    thr[dec] = lo[dec]
    flip[dec] = 1
    # check against fn itself: on every integer when that is cheap (catches any non-monotone
    # fn), else on the boundary pair of each channel
    if (2 * k_max + 1) * channels <= (1 << 21):
        acc = np.arange(-k_max, k_max + 1, dtype=np.int64)[:, None] * np.ones((1, channels), np.int64)
        got = np.where(flip.astype(bool), acc <= thr, acc >= thr)
        bad = (got != bit(acc)).any(axis=0)
        if bad.any():
            raise ValueError(f"fold_threshold: fn is not monotone in channel {int(cols[bad][0])}")
    elif active.any():
        b_at = bit(np.where(active, thr, 0)[None, :])[0]
        b_next = bit(np.where(active, np.where(inc, thr - 1, thr + 1), 0)[None, :])[0]
        bad = active & ~(b_at & ~b_next)
        if bad.any():
            raise ValueError(f"fold_threshold: fn is not monotone in channel {int(cols[bad][0])}")
    return thr.astype(np.int32), flip


def bn_eval_fn(gamma, beta, mean, var, eps: float, pre=None):
    """``fn(acc)`` = torch's eval-mode BatchNorm of float32(acc) (optionally of
    ``pre(acc)``, a float32 function of the accumulator such as ``acc * alpha + bias``),
    reproducing torch 2.13's CPU arithmetic bit for bit (checked by the tests against
    F.batch_norm): invstd = f32(1 / sqrt(var + eps)), a = f32(invstd * gamma),
    b = fma(-mean, a, beta), y = fma(x, a, b) (single roundings)."""
    f32, f64 = np.float32, np.float64
    g = np.asarray(gamma, dtype=f32)
    invstd = (f32(1) / np.sqrt(np.asarray(var, dtype=f32) + f32(eps))).astype(f32)
    a = (invstd * g).astype(f32)
    # fma via float64: the products of two float32 are exact in float64, and the sign (all
    # that thresholds need) of the float64 sum equals the sign of the exact sum.
    b = (np.asarray(beta, dtype=f32).astype(f64) - np.asarray(mean, dtype=f32).astype(f64) * a.astype(f64)).astype(f32)

    def fn(acc):
        x = np.asarray(acc).astype(f32) if pre is None else np.asarray(pre(acc), dtype=f32)
        return (x.astype(f64) * a.astype(f64) + b.astype(f64)).astype(f32)
    return fn


def fold_bn_threshold(gamma, beta, mean, var, eps: float, k_max: int, pre=None):
    """(thr, flip) with bit = [BatchNorm(acc) >= 0] exactly as torch eval computes it
    (``bn_eval_fn``), for |acc| <= k_max.  gamma < 0 flips, gamma = 0 is constant
    (bit = beta >= 0)."""
    g = np.asarray(gamma, dtype=np.float32)
    return fold_threshold(bn_eval_fn(gamma, beta, mean, var, eps, pre), k_max, g.shape[0])
