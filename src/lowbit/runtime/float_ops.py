"""Float reference ops in numpy and a sequential graph executor (no torch).

``conv2d`` (NCHW im2col, the reference) and ``conv2d_float`` / ``conv_matrix`` (NHWC im2col
over weights laid out once, what ``lowbit.runtime.Runtime`` runs) compute the same conv.

Runs the float graph of a model file, e.g. a Deep-Compression file whose tensors decode to
dense float32 weights.  Layout is NCHW like torch; results agree with torch's float32 ops to
rounding (tests/runtime/test_float_ops.py).

Graph schema: ``lowbit.codec.graph`` (``forward`` runs any version's float ops:
conv2d, dense, batchnorm, max / average / global pooling, upsample, relu, hardtanh, prelu,
act_quant, flatten, add, concat).

uint8 images go through the normalisation look-up table of ``lowbit.data.Normalization``
(``table()[pixel]``), so the float input is bit-identical to what training saw.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
           stride: Any = 1, padding: Any = 0) -> np.ndarray:
    """NCHW x, OIHW w -> NCHW, via im2col and one matrix product."""
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    o, c, kh, kw = w.shape
    if x.shape[1] != c:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels, weight expects {c}")
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]  # N C Ho Wo kh kw
    n, _, ho, wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
    y = cols @ w.reshape(o, -1).T
    if b is not None:
        y += b
    return np.ascontiguousarray(y.reshape(n, ho, wo, o).transpose(0, 3, 1, 2))


def conv_matrix(w: np.ndarray) -> np.ndarray:
    """OIHW float weights -> the (KH*KW*C, O) operand of ``conv2d_float``, laid out once."""
    w = np.asarray(w, np.float32)
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]))


def conv2d_float(x: np.ndarray, wmat: np.ndarray, kernel, b=None, stride=(1, 1),
                 padding=(0, 0), pad_value: float = 0.0) -> np.ndarray:
    """NCHW float conv as one BLAS product over NHWC im2col columns.

    ``wmat``: ``conv_matrix(w)``, rows ordered (kh, kw, c).  ``x`` may be the NCHW view of NHWC
    memory this function returns, so a chain of float convs never transposes data.  The
    columns are one strided copy of the windows (window rows of kw*c floats are contiguous
    in NHWC), or one copy per tap when rows are short and the batch large (c = 1 first
    layers: numpy copies 5-float runs slowly, measured 3.0 vs 1.8 ms at 64x28x28).
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xh = x.transpose(0, 2, 3, 1)                                   # (N, H, W, C) view
    n, h, wd, c = xh.shape
    if ph or pw:
        xp = np.full((n, h + 2 * ph, wd + 2 * pw, c), pad_value, np.float32)
        xp[:, ph:ph + h, pw:pw + wd] = xh
        xh, h, wd = xp, h + 2 * ph, wd + 2 * pw
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    if kw * c >= 16 or n * oh * ow <= 1024:
        # one strided copy of the windows; a window row (kw taps x c) is contiguous in NHWC
        xh = np.ascontiguousarray(xh, dtype=np.float32)     # the view below reads float32 memory
        e = xh.itemsize             # strides from the shape (size-1 axes may report any)
        s2, s1 = c * e, wd * c * e
        win = np.ndarray((n, oh, ow, kh, kw * c), np.float32, xh, 0,
                         (h * s1, s1 * sh, s2 * sw, s1, e))
        cols = np.ascontiguousarray(win)
    else:
        # short window rows (c = 1) at large batch: one strided slice copy per tap is faster
        cols = np.empty((n, oh, ow, kh * kw, c), np.float32)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, :, i * kw + j] = xh[:, i:i + (oh - 1) * sh + 1:sh,
                                               j:j + (ow - 1) * sw + 1:sw]
    y = cols.reshape(n * oh * ow, kh * kw * c) @ wmat               # (N*OH*OW, O)
    if b is not None:
        y += b
    return y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)         # NCHW view of NHWC memory


def maxpool2d(x: np.ndarray, kernel: Any = 2, stride: Any = None) -> np.ndarray:
    """Max over each window, as a running ``np.maximum`` of one strided slice per tap (works
    on the NHWC view, so an NCHW view of NHWC memory stays NHWC)."""
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride if stride is not None else kernel)
    xh = x.transpose(0, 2, 3, 1)
    oh, ow = (xh.shape[1] - kh) // sh + 1, (xh.shape[2] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = xh[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            out = np.array(tap) if out is None else np.maximum(out, tap, out=out)
    return out.transpose(0, 3, 1, 2)


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    y = x @ w.T
    if b is not None:
        y += b
    return y


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, dtype=x.dtype)


def flatten(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def _tap_sum(taps: np.ndarray) -> np.ndarray:
    """Sum over axis 0 of (K, ...) float32, one tap after another (numpy reduces an outer axis
    sequentially): torch's CPU pooling kernels add the window's taps in this order, so sums
    that cancel to exactly 0 in torch do here too."""
    return np.add.reduce(taps, axis=0, dtype=np.float32)


def avgpool2d(x: np.ndarray, kernel: Any, stride: Any = None, padding: Any = 0,
              count_include_pad: bool = True) -> np.ndarray:
    """torch AvgPool2d (no ceil_mode) of NCHW x: the window sum (taps added row by row) over
    the zero-padded input, divided by the window size (``count_include_pad``) or by its
    in-bounds part."""
    (kh, kw), (ph, pw) = _pair(kernel), _pair(padding)
    sh, sw = _pair(stride if stride is not None else kernel)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    total = _tap_sum(np.ascontiguousarray(np.moveaxis(win, (4, 5), (0, 1))).reshape(
        (kh * kw,) + win.shape[:4]))
    if count_include_pad or not (ph or pw):
        return (total / np.float32(kh * kw)).astype(np.float32)
    ones = np.pad(np.ones(x.shape[2:], np.float32), ((ph, ph), (pw, pw)))
    count = sliding_window_view(ones, (kh, kw))[::sh, ::sw].sum(axis=(2, 3))
    return (total / count.astype(np.float32)).astype(np.float32)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C, 1, 1): the mean over H and W (taps added row by row, as torch's
    adaptive average pooling does)."""
    n, c, h, w = x.shape
    taps = np.ascontiguousarray(x.reshape(n, c, h * w).transpose(2, 0, 1))   # (HW, N, C)
    return (_tap_sum(taps) / np.float32(h * w)).astype(np.float32).reshape(n, c, 1, 1)


def upsample(x: np.ndarray, scale: Any) -> np.ndarray:
    """Nearest-neighbour upsampling of NCHW x by integer factors."""
    sh, sw = _pair(scale)
    return np.repeat(np.repeat(x, sh, axis=2), sw, axis=3)


def hardtanh(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(x, np.float32(lo), np.float32(hi)).astype(np.float32, copy=False)


def prelu(x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """x if x > 0 else slope * x; one slope, or one per channel (axis 1)."""
    a = np.asarray(slope, np.float32)
    if a.size > 1:
        a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x > 0, x, x * a).astype(np.float32, copy=False)


def act_quant(x: np.ndarray, bits: int) -> np.ndarray:
    """DoReFa's k-bit activation: round(clip(x, 0, 1) (2^k - 1)) / (2^k - 1) (half to even)."""
    n = np.float32(2 ** int(bits) - 1)
    return (np.round(np.clip(x, np.float32(0), np.float32(1)) * n) / n).astype(np.float32)


def add(*xs: np.ndarray) -> np.ndarray:
    out = xs[0] + xs[1]
    for x in xs[2:]:
        out += x
    return out


def concat(*xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=1)


def normalize(images: np.ndarray, graph: Mapping[str, Any]) -> np.ndarray:
    """uint8 ``(N, H, W)`` / ``(N, C, H, W)`` -> the float32 input of the graph (any version):
    each channel through its look-up table (``lowbit.data.Normalization``)."""
    from lowbit.codec.graph import parse
    spec = parse(graph)["inputs"][0]
    images = np.asarray(images)
    if images.dtype != np.uint8:
        return images.astype(np.float32)
    if images.ndim == 3:
        images = images[:, None]
    return input_tables(spec.get("normalization"), images.shape[1])[
        np.arange(images.shape[1])[None, :, None, None], images]


def input_tables(norm: Mapping[str, Any] | None, channels: int) -> np.ndarray:
    """float32 (C, 256): the normalised value of every pixel value, per channel (``u8 / 255``
    without normalization); one channel's statistics apply to every channel.

    The formula of ``lowbit.data.Normalization.tables`` (float64 ``(u8 / scale - mean) /
    std`` rounded once to float32; tests/runtime/test_float_ops.py checks they agree), here
    so that loading a model does not import the data package (its readers and detection
    modules cost ~1.5 MB of a runtime process's peak RSS).  The graph's normalisation was
    validated at load (lowbit.codec.graph)."""
    if norm is None:
        return np.broadcast_to(np.arange(256, dtype=np.float32) / np.float32(255), (channels, 256))
    mean = np.atleast_1d(np.asarray(norm["mean"], np.float64)).reshape(-1, 1)
    std = np.atleast_1d(np.asarray(norm["std"], np.float64)).reshape(-1, 1)
    if mean.shape[0] != std.shape[0]:                       # a scalar with a list: broadcast
        mean, std = np.broadcast_arrays(mean, std)
    scale = float(norm.get("scale", 255.0))
    t = ((np.arange(256, dtype=np.float64)[None] / scale - mean) / std).astype(np.float32)
    if t.shape[0] not in (1, channels):
        raise ValueError(f"graph input normalization: {t.shape[0]} channels, input has {channels}")
    return np.broadcast_to(t, (channels, 256))


_UNARY = {"relu": lambda x, op, get: relu(x),
          "flatten": lambda x, op, get: flatten(x),
          "maxpool2d": lambda x, op, get: maxpool2d(x, op.get("kernel", 2), op.get("stride")),
          "avgpool2d": lambda x, op, get: avgpool2d(x, op["kernel"], op.get("stride"),
                                                    op.get("padding", 0),
                                                    op.get("count_include_pad", True)),
          "global_avgpool": lambda x, op, get: global_avgpool(x),
          "upsample": lambda x, op, get: upsample(x, op["scale"]),
          "hardtanh": lambda x, op, get: hardtanh(x, op["min"], op["max"]),
          "prelu": lambda x, op, get: prelu(x, get(op["weight"])),
          "act_quant": lambda x, op, get: act_quant(x, op["bits"]),
          "conv2d": lambda x, op, get: conv2d(x, get(op["weight"]), get(op.get("bias")),
                                              op.get("stride", 1), op.get("padding", 0)),
          "dense": lambda x, op, get: dense(x, get(op["weight"]), get(op.get("bias")))}


def forward(graph: Mapping[str, Any], tensor: Callable[[str], np.ndarray],
            x: np.ndarray) -> np.ndarray:
    """Run a float graph (any version; float ops only) on float32 ``x``; ``tensor(name)``
    returns a dense float array.  The first graph output."""
    from lowbit.codec.graph import parse

    def get(name):
        return None if name is None else np.asarray(tensor(name), dtype=np.float32)

    g = parse(graph)
    vals = {g["inputs"][0]["name"]: np.asarray(x, dtype=np.float32)}
    for i, op in enumerate(g["ops"]):
        kind, xs = op["op"], [vals[v] for v in op["inputs"]]
        if kind in _UNARY:
            y = _UNARY[kind](xs[0], op, get)
        elif kind == "batchnorm":
            from lowbit.codec.fold import batchnorm
            y = batchnorm(xs[0], *(get(op[k]) for k in ("gamma", "beta", "mean", "var")),
                          op["eps"])
        elif kind == "add":
            y = add(*xs)
        elif kind == "concat":
            y = concat(*xs)
        else:
            raise ValueError(f"graph op {i}: op {kind!r} is not a float op (use "
                             f"lowbit.runtime.Runtime for quantized graphs)")
        vals[op["outputs"][0]] = y
    return vals[g["outputs"][0]]


def predict(model_file: Any, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """Class predictions (int64) of a ``lowbit.codec.ModelFile`` on uint8 images."""
    out = []
    for s in range(0, len(images), batch):
        x = normalize(images[s:s + batch], model_file.graph)
        y = forward(model_file.graph, model_file.tensor, x)
        out.append(y.reshape(len(y), -1).argmax(axis=1))
    return np.concatenate(out) if out else np.zeros(0, np.int64)
