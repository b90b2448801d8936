"""Graph rewrites applied at export, on a version-2 graph and its tensors (numpy only).

``fold_sign_bn``: a quantized layer with an exact integer accumulator, followed (through at
most one max-pool) by a BatchNorm whose value -- through max-pools / flattens -- is read only
by sign consumers (a ``sign`` op or a layer whose input mode is ``sign``), computes
sign(BatchNorm(acc)) as per-channel integer thresholds and emits packed bits (BNN Algorithm 4;
``lowbit.codec.fold.fold_bn_threshold``, exact incl. ties).  It applies anywhere in the DAG,
inside branches too, as long as no other op reads the values it removes.

``repack_spatial_dense``: a binary dense layer fed by packed spatial bits (N, H, W, C/64) runs
as a conv whose kernel is the whole input; its weights are re-stored as (OC, H, W, C) (torch
flattens C, H, W).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lowbit.codec import packed as P
from lowbit.codec.fold import fold_bn_threshold
from lowbit.codec.graph import consumers
from lowbit.codec.model import raw

__all__ = ["fold_sign_bn", "repack_spatial_dense", "bits_values"]

_QLAYERS = ("qconv2d", "qdense")


def _sign_consumer(op: dict) -> bool:
    return op["op"] == "sign" or (op["op"] in _QLAYERS and op["in"] == "sign")


def _foldable(op: dict) -> bool:
    return (op["op"] in _QLAYERS and op["integer_acc"] and op["in"] != "xnor" and "sw" not in op
            and op.get("sx") is None and "bias" not in op and op.get("out") == "float")


def _kbits(op: dict) -> int:
    """The largest |accumulator| of ``op``."""
    k = op["in_channels"] * op["kernel"][0] * op["kernel"][1]
    if op["in"] == "uint8":
        k *= 255
    elif op["in"] == "dorefa":
        k *= (2 ** op["a_bits"] - 1) * (2 ** op["w_bits"] - 1)
    return k


def _rename(graph: dict, old: str, new: str) -> None:
    for op in graph["ops"]:
        op["inputs"] = [new if v == old else v for v in op["inputs"]]
    graph["outputs"] = [new if v == old else v for v in graph["outputs"]]


def fold_sign_bn(graph: dict, tensors: dict) -> None:
    """Apply the sign(BatchNorm) fold in place (``tensors``: name -> ``codec.Tensor``)."""
    ops = graph["ops"]
    removed: set[int] = set()
    for i, op in enumerate(ops):
        if i in removed or not _foldable(op):
            continue
        cons = consumers(graph)

        def single(v: str) -> int | None:
            c = cons.get(v, [])
            return c[0] if len(c) == 1 and c[0] >= 0 else None

        k = single(op["outputs"][0])
        pool = None
        if k is not None and ops[k]["op"] == "maxpool2d":
            pool, k = k, single(ops[k]["outputs"][0])
        if k is None or ops[k]["op"] != "batchnorm":
            continue
        bn = ops[k]
        w = bn["outputs"][0]
        while (nxt := single(w)) is not None and ops[nxt]["op"] in ("maxpool2d", "flatten"):
            w = ops[nxt]["outputs"][0]
        users = cons.get(w, [])
        if not users or any(u < 0 or not _sign_consumer(ops[u]) for u in users):
            continue
        t = lambda n: tensors[bn[n]].data
        thr, flip = fold_bn_threshold(t("gamma"), t("beta"), t("mean"), t("var"), bn["eps"],
                                      _kbits(op))
        name = op["name"]
        op.update(out="bits", threshold=f"{name}.thr", flip=f"{name}.flip",
                  pool={a: ops[pool][a] for a in ("op", "kernel", "stride")} if pool is not None
                  else None, folded=bn.get("name"))
        tensors[op["threshold"]] = raw(thr.astype(np.int32))
        tensors[op["flip"]] = raw(flip.astype(np.uint8))
        for n in ("gamma", "beta", "mean", "var"):
            tensors.pop(bn[n], None)
        removed.update({k} | ({pool} if pool is not None else set()))
        op["outputs"] = [bn["outputs"][0]]
        for u in users:                       # sign of packed bits: nothing left to do
            if ops[u]["op"] == "sign":
                removed.add(u)
                _rename(graph, ops[u]["outputs"][0], w)
    graph["ops"] = [op for i, op in enumerate(ops) if i not in removed]


def bits_values(graph: Mapping[str, Any]) -> set[str]:
    """The values a runtime holds as packed bits: outputs of ``sign`` and of layers with
    ``out: "bits"``, carried through max-pools and flattens."""
    bits: set[str] = set()
    for op in graph["ops"]:
        kind, out = op["op"], op["outputs"][0]
        if kind == "sign" or (kind in _QLAYERS and op.get("out") == "bits"):
            bits.add(out)
        elif kind in ("maxpool2d", "flatten") and op["inputs"][0] in bits:
            bits.add(out)
    return bits


def repack_spatial_dense(graph: dict, tensors: dict, shapes: Mapping[str, tuple]) -> None:
    """Re-store binary dense layers fed by flattened spatial bits (``shapes``: value -> shape
    without the batch axis)."""
    bits = bits_values(graph)
    made_by = {op["outputs"][0]: op for op in graph["ops"]}
    for op in graph["ops"]:
        src = made_by.get(op["inputs"][0])
        if not (op["op"] == "qdense" and op["in"] == "sign" and op["w_levels"] == "binary"
                and op["inputs"][0] in bits and src is not None and src["op"] == "flatten"):
            continue
        spatial = tuple(shapes.get(src["inputs"][0], ()))
        if len(spatial) != 3:
            continue
        c, h, w = spatial
        t = tensors[op["weight"]]
        lv = P.unpack_levels(t.entry, t.data)                   # (OC, 1, 1, C*H*W)
        lv = lv.reshape(lv.shape[0], c, h, w).transpose(0, 2, 3, 1)
        tensors[op["weight"]] = P.packed(lv.astype(np.int64), "binary")
        op.update(in_channels=c, kernel=[h, w], spatial=True)
