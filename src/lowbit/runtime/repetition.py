"""Binary filter repetition (BNN paper, Hubara et al. 2016, section "Exploiting filter
repetitions"): counts, and an opt-in executor that computes each unique filter once.

A binary k x k filter slice has only 2^(k*k) possible values (512 for 3x3), so trained binary
convs repeat many of them; the paper finds only 42% of the 2D filters unique per layer on its
CIFAR-10 ConvNet.  :func:`filter_stats` counts, for one binary conv's levels (OC, KH, KW, C):

- ``unique_filters``: distinct whole filters (KH x KW x C), and ``unique_filters_sign``
  counting a filter and its negation as one (acc(-w) = -acc(w));
- ``slices_unique_per_channel``: for each input channel c, the distinct KH x KW slices among
  the OC filters' slices at c, as a fraction of OC, averaged over c -- the paper's count
  (``..._sign``: up to sign);
- ``unique_slices``: distinct KH x KW slices over the whole layer (of OC x C).

:func:`dedup` (opt-in, Python executor only): for every binary layer of a ``Runtime`` whose
whole filters repeat, lay out only the unique filters (up to sign), run the XNOR-popcount
kernel for those, and scatter the integer accumulators to all output channels
(``acc[..., oc] = sign[oc] * acc_u[..., inverse[oc]]``) before the layer's own output stage
(thresholds -> packed bits, or the float stage).  Results are identical to the normal layer
(tested); whether it is faster depends on how many filters repeat -- see docs/methods.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lowbit import codec
from lowbit.runtime import bitconv as B
from lowbit.runtime import kernels as K
from lowbit.runtime.ops import Bits, QLayer, _pool_bits

__all__ = ["filter_stats", "file_repetition", "format_repetition", "DedupLayer", "dedup"]


def _unique_rows(m: np.ndarray, sign: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(representatives, inverse, signs) of the rows of a ±1 matrix; with ``sign`` a row and
    its negation are one (each row is flipped so that its first entry is +1)."""
    s = np.where(m[:, :1] < 0, -1, 1).astype(np.int8) if sign else np.ones((len(m), 1), np.int8)
    canon = (m * s).astype(np.int8)
    reps, first, inverse = np.unique(canon, axis=0, return_index=True, return_inverse=True)
    return reps, inverse.reshape(-1), s[:, 0]


def filter_stats(levels: np.ndarray) -> dict[str, Any]:
    """Repetition counts of one binary conv (module doc); ``levels`` (OC, KH, KW, C) of ±1."""
    lv = np.asarray(levels)
    if lv.ndim != 4 or not np.isin(lv, (-1, 1)).all():
        raise ValueError(f"filter_stats: expected (OC, KH, KW, C) levels of -1/+1, got shape "
                         f"{lv.shape}")
    oc, kh, kw, c = lv.shape
    lv = lv.astype(np.int8)
    whole = lv.reshape(oc, -1)
    slices = lv.transpose(3, 0, 1, 2).reshape(c, oc, kh * kw)        # [c, o, tap]
    per_c = [len(_unique_rows(slices[i], False)[0]) for i in range(c)]
    per_c_s = [len(_unique_rows(slices[i], True)[0]) for i in range(c)]
    return {"filters": oc, "kernel": [kh, kw], "in_channels": c,
            "unique_filters": len(_unique_rows(whole, False)[0]),
            "unique_filters_sign": len(_unique_rows(whole, True)[0]),
            "slices": oc * c, "possible_slices": 2 ** (kh * kw),
            "unique_slices": len(_unique_rows(slices.reshape(-1, kh * kw), False)[0]),
            "slices_unique_per_channel": float(np.mean(per_c)) / oc,
            "slices_unique_per_channel_sign": float(np.mean(per_c_s)) / oc}


def _binary_convs(graph: dict) -> list[dict]:
    return [op for op in graph["ops"] if op["op"] == "qconv2d" and op["w_levels"] == "binary"
            and not op.get("spatial")]


def file_repetition(path_or_mf) -> list[dict]:
    """One row per binary conv layer of a model file (name + :func:`filter_stats`)."""
    mf = codec.load(path_or_mf) if not hasattr(path_or_mf, "tensor") else path_or_mf
    graph = codec.graph.parse(mf.graph, "graph", mf.entries)
    return [dict(name=op["name"], **filter_stats(np.asarray(mf.tensor(op["weight"]))))
            for op in _binary_convs(graph)]


def format_repetition(rows: list[dict]) -> str:
    """The ``lowbit summary`` section (empty string without binary convs)."""
    if not rows:
        return ""
    head = ["binary conv", "kernel", "filters", "unique", "unique +-", "2D slices",
            "unique slices", "unique per in-channel", "(+-)"]
    lines = []
    for r in rows:
        lines.append([r["name"], "x".join(map(str, r["kernel"])), f"{r['filters']:,}",
                      f"{r['unique_filters']:,}", f"{r['unique_filters_sign']:,}",
                      f"{r['slices']:,}", f"{r['unique_slices']:,} of {r['possible_slices']:,}",
                      f"{r['slices_unique_per_channel']:.1%}",
                      f"{r['slices_unique_per_channel_sign']:.1%}"])
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    mean = np.mean([r["slices_unique_per_channel"] for r in rows])
    return "\n".join(["filter repetition (BNN paper: 42% of 2D filters unique per layer on "
                      "its CIFAR-10 net):", fmt(head), *map(fmt, lines),
                      f"mean unique 2D filters per in-channel: {mean:.1%}; unique = whole "
                      f"filters, +- = a filter and its negation counted once"])


class DedupLayer:
    """A binary ``QLayer`` that runs its unique filters (up to sign) only (module doc)."""

    def __init__(self, base: QLayer, levels: np.ndarray, sign: bool = True):
        if base.kind != "binary":
            raise ValueError(f"{base.name}: dedup needs a binary layer, got {base.kind}")
        self.base, self.name = base, base.name
        lv = np.asarray(levels, np.float32)                       # (OC, KH, KW, C)
        reps, inverse, s = _unique_rows(lv.reshape(lv.shape[0], -1), sign)
        self.unique, self.inverse = len(reps), inverse.astype(np.intp)
        self.sign = s.astype(np.int32)
        self.flip_sign = bool((self.sign < 0).any())
        w = K.bitpack(reps.astype(np.float32).reshape((-1,) + lv.shape[1:]))  # (U, KH, KW, words)
        corr = base.pad_value != -1 and any(base.padding)
        path = getattr(base.pw, "path", None)
        self.pw = (B.prepare_binary_dense(w[:, 0, 0], base.c, path) if base.flat_dense else
                   B.prepare_binary_conv2d(w, base.c, correction=corr, path=path))
        self.kind = base.kind

    def weight_bytes(self) -> int:
        return self.pw.nbytes

    def accumulators(self, xq, threads: int) -> np.ndarray:
        """int32 accumulators of all OC channels, (N, OH, OW, OC) or (N, OC)."""
        b = self.base
        if b.flat_dense:
            acc = B.binary_dense(xq, self.pw, out="int32", threads=threads)
        else:
            acc = B.binary_conv2d(xq, self.pw, stride=b.stride, padding=b.padding,
                                  pad_value=b.pad_value, out="int32", threads=threads)
        acc = np.take(acc, self.inverse, axis=-1)
        if self.flip_sign:
            acc *= self.sign
        return acc

    def __call__(self, v, threads: int = 1, record: dict | None = None):
        b = self.base
        xq, kfac = b._operand(v, threads)
        acc = self.accumulators(xq, threads)
        if b.out == "bits":
            if record is not None:
                record[self.name] = b._torch_layout(acc)
            thr = b.thr.astype(np.float64)            # INT32_MIN thresholds: no int overflow
            z = np.where(b.flip.astype(bool), thr - acc, acc - thr)
            bits = K.bitpack(z, threads)                          # bit = z >= 0
            if bits.ndim == 2:
                bits = bits[:, None, None, :]
            p = b.op.get("pool")
            if p is not None:
                if b.flip_words is not None:
                    bits = bits ^ b.flip_words
                bits = _pool_bits(bits, p, threads, b.pw.path)
                if b.flip_words is not None:
                    bits = bits ^ b.flip_words
            return Bits(bits, b.oc)
        acc = b._torch_layout(acc)
        if record is not None:
            record[self.name] = acc
        y = acc.astype(np.float32)
        view = (1, -1) + (1,) * (y.ndim - 2)
        if b.sw is not None:
            y = y * (b.sw.reshape(view) if b.sw.ndim else b.sw)
        if b.sx is not None:
            y = y * b.sx
        if kfac is not None:
            y = y * kfac
        if b.bias is not None:
            y = y + b.bias.reshape(view)
        return y.astype(np.float32, copy=False)


def dedup(rt, layers=None, sign: bool = True, max_unique_fraction: float = 1.0) -> dict:
    """Switch ``rt`` (a ``Runtime``) to the Python executor and replace its binary layers
    (``layers``: names, default all binary conv / dense layers) whose unique filters are at
    most ``max_unique_fraction`` of their output channels by :class:`DedupLayer`.  Returns
    ``{name: (out_channels, unique)}`` of the replaced layers."""
    mf = codec.load(rt.path)                  # the runtime dropped its sections after planning
    done = {}
    for op in rt.ops:
        if op["op"] not in ("qconv2d", "qdense") or (layers is not None and op["name"] not in layers):
            continue
        base = rt.layers[op["name"]]
        base = getattr(base, "base", base)
        if base.kind != "binary":
            continue
        lv = np.asarray(mf.tensor(op["weight"]))
        d = DedupLayer(base, lv, sign)
        if d.unique <= max_unique_fraction * base.oc:
            rt.layers[op["name"]] = d
            done[op["name"]] = (base.oc, d.unique)
    rt.native, rt.executor = None, "python"
    return done
