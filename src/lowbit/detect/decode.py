"""Decode a CenterNet-style detector's maps into boxes (numpy only; no anchors, no NMS).

``decode(heatmap_logits, size, offset, stride)`` takes the three outputs of
``lowbit.train.detector`` on the ``stride`` grid, for a batch::

    heatmap_logits  (N, K, h, w)   score = sigmoid(logit) per class and cell
    size            (N, 2, h, w)   log(w / stride), log(h / stride)
    offset          (N, 2, h, w)   centre offset (dx, dy) from the cell's corner, clipped
                                   to [-1, 2]: a peak one cell off the centre still places
                                   the box in the right cell (lowbit.train.detect_loss's
                                   ``neighbours``; a centre cell's offset lies in [0, 1))

A *peak* is a cell whose logit equals the maximum of its 3x3 neighbourhood in its own class
map (CenterNet's 3x3 max-pool; the border is padded with -inf).  Picking is done on the logits
-- the same cells as on sigmoid scores, since the sigmoid is increasing, but free of the ties
float rounding creates where it saturates; cells tied exactly (a plateau) are all peaks, as in
CenterNet.  Peaks with score >= ``threshold`` are kept, at most ``topk`` per image (highest
scores first; equal scores in (class, y, x) order).  A peak at cell (x, y) gives::

    centre = ((x + dx) * stride, (y + dy) * stride)
    w, h   = exp(size) * stride             (exponent clipped to +-20)
    box    = centre -+ (w, h) / 2, clipped to the image [0, W] x [0, H]

with (W, H) = ``image_size`` (default: the grid times the stride, the network input).
"""
from __future__ import annotations

import numpy as np

from lowbit.detect.detections import Detections

__all__ = ["decode", "peaks", "sigmoid"]

_EXP_CLIP = 20.0
OFFSET_MIN, OFFSET_MAX = -1.0, 2.0


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64, without overflow warnings."""
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def peaks(maps: np.ndarray) -> np.ndarray:
    """bool, same shape as ``maps`` (..., h, w): each value equal to the maximum of its 3x3
    neighbourhood (the border padded with -inf)."""
    m = np.asarray(maps)
    pad = [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(m.astype(np.float64), pad, constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(p, (3, 3), axis=(-2, -1))  # (..., h, w, 3, 3)
    return m >= win.max(axis=(-2, -1))


def _check(name: str, a, n: int | None, c: int | None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 4 or (n is not None and a.shape[0] != n) or (c is not None and a.shape[1] != c):
        want = f"({n if n is not None else 'N'}, {c if c is not None else 'K'}, h, w)"
        raise ValueError(f"decode: {name}: expected shape {want}, got {a.shape}")
    return a


def decode(heatmap_logits, size, offset, stride: int, threshold: float = 0.3,
           topk: int = 100, image_size=None) -> list[Detections]:
    """One :class:`Detections` per image (module docstring).  ``image_size`` = (H, W) in
    pixels, default ``(h * stride, w * stride)``."""
    hm = _check("heatmap_logits", heatmap_logits, None, None)
    n, k, gh, gw = hm.shape
    sz = _check("size", size, n, 2)
    off = _check("offset", offset, n, 2)
    if sz.shape[2:] != (gh, gw) or off.shape[2:] != (gh, gw):
        raise ValueError(f"decode: size {sz.shape} and offset {off.shape} must have the "
                         f"heatmap's grid {(gh, gw)}")
    if int(topk) < 1:
        raise ValueError(f"decode: topk: expected >= 1, got {topk!r}")
    H, W = (gh * stride, gw * stride) if image_size is None else (float(v) for v in image_size)
    keep = peaks(hm)                                              # (N, K, h, w)
    out = []
    for i in range(n):
        score = sigmoid(hm[i])                                    # (K, h, w)
        cls, ys, xs = np.nonzero(keep[i] & (score >= threshold))  # (class, y, x) order
        s = score[cls, ys, xs]
        order = np.argsort(-s, kind="stable")[:int(topk)]
        cls, ys, xs, s = cls[order], ys[order], xs[order], s[order]
        dx, dy = np.clip(off[i][:, ys, xs].astype(np.float64), OFFSET_MIN, OFFSET_MAX)
        lw, lh = np.clip(sz[i][:, ys, xs].astype(np.float64), -_EXP_CLIP, _EXP_CLIP)
        cx, cy = (xs + dx) * stride, (ys + dy) * stride
        bw, bh = np.exp(lw) * stride, np.exp(lh) * stride
        xyxy = np.stack([np.clip(cx - bw / 2, 0, W), np.clip(cy - bh / 2, 0, H),
                         np.clip(cx + bw / 2, 0, W), np.clip(cy + bh / 2, 0, H)], axis=1)
        out.append(Detections(xyxy.reshape(-1, 4), s, cls))
    return out
