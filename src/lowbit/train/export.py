"""Export a trained torch model to a lowbit model file (the graph the runtime executes).

``export_model(model, path, normalization)`` / ``lowbit export CHECKPOINT OUT``.

Sequential recipes (lowbit.train.recipes) are walked child by child; other models (the float
LeNets) go through ``lowbit.train.graph.graph_of`` (float ops only).  Op schema: see
``lowbit.runtime.graph``.  Quantized layers store their integer weight levels bit-packed
(``lowbit.codec.packed``: 1 plane binary, 2 planes ternary, k planes k-bit), float layers
float32.  A BatchNorm (with max pools before/after it) between a layer with an exact integer
accumulator and a sign (a binary-input layer or a sign module) is folded into integer
thresholds (``fold_bn_threshold``, exact incl. ties), so such layers emit packed bits.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from lowbit import codec
from lowbit.codec.packed import packed
from lowbit.runtime.ref import fold_bn_threshold

from . import quantizers as Q
from .layers import QuantConv2d, QuantMixin

__all__ = ["export_model", "export_checkpoint", "build_graph"]

GRAPH_VERSION = 1


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32) if torch.is_tensor(t) else np.float32(t)


def _in_mode(iq) -> tuple[str, int]:
    """(mode, bits) of an input quantizer."""
    if iq is None:
        return "float", 32
    if isinstance(iq, Q.XnorSign):
        return "xnor", 1
    if isinstance(iq, Q.SteSign):
        return "sign", 1
    if isinstance(iq, Q.Uint8Input):
        return "uint8", 8
    if isinstance(iq, Q.DorefaActivation):
        return ("dorefa", iq.bits) if iq.bits < 32 else ("dorefa-float", iq.bits)
    raise ValueError(f"export: input quantizer {type(iq).__name__} is not supported")


def _weight_levels(layer: QuantMixin, name: str, tensors: dict) -> dict:
    """Store the weight levels of ``layer`` (NHWC-tap order (OC, KH, KW, C)) and its scale."""
    wl, sw = layer.split_weight()
    wl = wl.float()
    if wl.dim() == 2:
        wl = wl[:, None, None, :]
    else:
        wl = wl.permute(0, 2, 3, 1)
    lv = wl.cpu().numpy()
    wq = layer.weight_quantizer
    op: dict[str, Any] = {"weight": f"{name}.weight"}
    if wq is None or not wq.integer_levels:
        tensors[op["weight"]] = codec.model.raw(lv.astype(np.float32))
        op["w_levels"] = "float"
    else:
        vals = np.unique(lv)
        if np.isin(vals, (-1, 1)).all():
            kind, bits, step, off = "binary", 1, 1, 0
        elif np.isin(vals, (-1, 0, 1)).all() and wq.bits == 2:
            kind, bits, step, off = "ternary", 2, 1, 0
        elif isinstance(wq, Q.DorefaWeight):
            n = 2 ** wq.bits - 1
            kind, bits, step, off = "planes", wq.bits, 2, -n
        else:  # five-level and others: unsigned levels above the minimum
            lo = int(min(vals.min(), -(2 ** (wq.bits - 1)) + 1))
            kind, bits, step, off = "planes", wq.bits, 1, lo
        tensors[op["weight"]] = packed(lv.astype(np.int64), kind, bits, step, off)
        op["w_levels"] = kind
    if sw is not None:
        op["sw"] = f"{name}.sw"
        tensors[op["sw"]] = codec.model.raw(np.asarray(_np(sw), np.float32).reshape(-1 if sw.dim() else ()))
    return op


def _qlayer(name: str, m: QuantMixin, in_shape, tensors: dict) -> dict:
    mode, a_bits = _in_mode(m.input_quantizer)
    op: dict[str, Any] = {"op": "qconv2d" if isinstance(m, QuantConv2d) else "qdense",
                          "name": name, "in": mode, "a_bits": a_bits,
                          "w_bits": m.weight_bits, "integer_acc": m.integer_accumulator,
                          "out_channels": int(m.weight.shape[0]), "out": "float"}
    op.update(_weight_levels(m, name, tensors))
    if isinstance(m, QuantConv2d):
        if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
            raise ValueError(f"export: {name}: groups/dilation/padding_mode unsupported")
        op.update(in_channels=int(m.in_channels), kernel=list(m.kernel_size),
                  stride=list(m.stride), padding=list(m.padding), pad_value=int(m.pad_value))
    else:
        op.update(in_channels=int(m.in_features), kernel=[1, 1], stride=[1, 1], padding=[0, 0],
                  pad_value=0)
    if isinstance(m.input_quantizer, Q.DorefaActivation):
        op["sx"] = 1.0 / (2 ** a_bits - 1) if a_bits < 32 else None
    if isinstance(m.input_quantizer, Q.Uint8Input):
        op["u8"] = {"mean": float(m.input_quantizer.mean), "std": float(m.input_quantizer.std)}
    if m.bias is not None:
        op["bias"] = f"{name}.bias"
        tensors[op["bias"]] = codec.model.raw(_np(m.bias))
    op["in_shape"] = list(in_shape[1:])
    return op


def _module_ops(name: str, m: nn.Module, in_shape, tensors: dict) -> list[dict]:
    if isinstance(m, QuantMixin):
        return [_qlayer(name, m, in_shape, tensors)]
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        for k in ("weight", "bias", "running_mean", "running_var"):
            tensors[f"{name}.{k}"] = codec.model.raw(_np(getattr(m, k)))
        return [{"op": "batchnorm", "name": name, "gamma": f"{name}.weight",
                 "beta": f"{name}.bias", "mean": f"{name}.running_mean",
                 "var": f"{name}.running_var", "eps": float(m.eps)}]
    if isinstance(m, nn.MaxPool2d):
        from .graph import _pool
        return [_pool(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)]
    if isinstance(m, nn.ReLU):
        return [{"op": "relu"}]
    if isinstance(m, nn.Flatten):
        return [{"op": "flatten"}]
    if isinstance(m, Q.SteSign):
        return [{"op": "sign"}]
    if isinstance(m, (Q.DorefaGrad, nn.Dropout, nn.Identity)):
        return []
    raise ValueError(f"export: module {name!r} ({type(m).__name__}) has no runtime op")


def _fold(ops: list[dict], tensors: dict) -> list[dict]:
    """Fold [maxpool]* BN [maxpool|flatten]* sign into integer-accumulator layers."""
    out, i = [], 0
    while i < len(ops):
        op = ops[i]
        out.append(op)
        i += 1
        if not (op["op"] in ("qconv2d", "qdense") and op["integer_acc"] and op["in"] != "xnor"
                and "sw" not in op and op.get("sx") is None and "bias" not in op):
            continue
        j, pre_pool = i, []
        while j < len(ops) and ops[j]["op"] in ("maxpool2d",):
            pre_pool.append(ops[j])
            j += 1
        if j >= len(ops) or ops[j]["op"] != "batchnorm":
            continue
        bn, j = ops[j], j + 1
        k = j
        while k < len(ops) and ops[k]["op"] in ("maxpool2d", "flatten"):
            k += 1
        nxt = ops[k] if k < len(ops) else None
        if nxt is None or not (nxt["op"] == "sign" or (nxt["op"] in ("qconv2d", "qdense")
                                                      and nxt["in"] == "sign")):
            continue
        if len(pre_pool) > 1:
            continue  # (no recipe has two pools there) keep it unfused
        kbits = op["in_channels"] * op["kernel"][0] * op["kernel"][1]
        if op["in"] == "uint8":
            kbits *= 255
        elif op["in"] == "dorefa":
            kbits *= (2 ** op["a_bits"] - 1) * (2 ** op["w_bits"] - 1)
        t = lambda n: tensors[bn[n]].data
        thr, flip = fold_bn_threshold(t("gamma"), t("beta"), t("mean"), t("var"), bn["eps"], kbits)
        op.update(out="bits", threshold=f"{op['name']}.thr", flip=f"{op['name']}.flip",
                  pool=pre_pool[0] if pre_pool else None, folded=bn["name"])
        tensors[op["threshold"]] = codec.model.raw(thr.astype(np.int32))
        tensors[op["flip"]] = codec.model.raw(flip.astype(np.uint8))
        for n in ("gamma", "beta", "mean", "var"):
            tensors.pop(bn[n], None)
        out.extend(ops[j:k])
        i = k + (1 if nxt["op"] == "sign" else 0)
    return out


def build_graph(model: nn.Module, normalization: dict | None,
                input_shape=(1, 28, 28)) -> tuple[dict, dict]:
    """(graph, tensors) of ``model`` (eval mode)."""
    model = model.eval()
    graph_input = {"shape": list(input_shape), "dtype": "uint8"}
    if normalization is not None:
        graph_input["normalization"] = dict(normalization)
    if not isinstance(model, nn.Sequential):
        from .graph import graph_of
        g = graph_of(model, input_shape, normalization)
        tensors = {k: codec.model.raw(v.detach().cpu().numpy()) for k, v in model.state_dict().items()
                   if any(k in (op.get("weight"), op.get("bias")) for op in g["ops"])}
        g.update(version=GRAPH_VERSION)
        return g, tensors
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(n, tuple(inp[0].shape)))
             for n, m in model.named_children()]
    try:
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape)))
    finally:
        for h in hooks:
            h.remove()
    tensors: dict = {}
    ops: list[dict] = []
    last_spatial = None          # input shape of the latest flatten (N, C, H, W)
    for n, m in model.named_children():
        new = _module_ops(n, m, shapes[n], tensors)
        for op in new:
            if op["op"] == "qdense":
                op["spatial_shape"] = last_spatial
        if isinstance(m, nn.Flatten):
            last_spatial = list(shapes[n][1:]) if len(shapes[n]) == 4 else None
        elif isinstance(m, QuantMixin):
            last_spatial = None
        ops.extend(new)
    ops = _fold(ops, tensors)
    _repack_spatial_dense(ops, tensors)
    return {"version": GRAPH_VERSION, "input": graph_input, "ops": ops}, tensors


def _repack_spatial_dense(ops: list[dict], tensors: dict) -> None:
    """A binary dense layer fed by packed spatial bits (N, H, W, ceil(C/64)) runs as a conv whose
    kernel is the whole input: re-store its weights as (OC, H, W, C) (torch flattens C, H, W)."""
    bits = False
    for op in ops:
        kind = op["op"]
        if kind == "qdense" and bits and op["in"] == "sign" and op.get("spatial_shape") \
                and op["w_levels"] == "binary":
            c, h, w = op["spatial_shape"]
            t = tensors[op["weight"]]
            lv = codec.packed.unpack_levels(t.entry, t.data)            # (OC, 1, 1, C*H*W)
            lv = lv.reshape(lv.shape[0], c, h, w).transpose(0, 2, 3, 1)
            tensors[op["weight"]] = packed(lv.astype(np.int64), "binary")
            op.update(in_channels=c, kernel=[h, w], spatial=True)
        if kind in ("qconv2d", "qdense"):
            bits = op["out"] == "bits"
        elif kind == "sign":
            bits = True
        elif kind in ("batchnorm", "relu", "conv2d", "dense"):
            bits = False


def export_model(model: nn.Module, path: str | os.PathLike, normalization: dict | None = None,
                 meta: dict | None = None) -> int:
    """Write ``model`` as a lowbit model file; returns the file size in bytes."""
    graph, tensors = build_graph(model, normalization)
    meta = dict(meta or {})
    spec = getattr(model, "lowbit_spec", None)
    if "model" not in meta and spec:   # registry name + kwargs: lets benchmarks rebuild it
        meta["model"] = {"name": spec["name"], "kwargs": dict(spec.get("kwargs") or {})}
    return codec.save(path, graph, tensors, meta)


def export_checkpoint(checkpoint: str, out: str) -> int:
    """``lowbit export CHECKPOINT OUT``: print one line; exit code 2 on bad input."""
    import sys
    from .checkpoint import CheckpointError, load_model
    try:
        model, meta = load_model(checkpoint)
        norm = meta.get("normalization")
        size = export_model(model, out, norm.to_dict() if norm is not None else None,
                            {"model": model.lowbit_spec, "source": str(checkpoint)})
    except (CheckpointError, ValueError, OSError) as e:
        print(f"lowbit export: error: {e}", file=sys.stderr)
        return 2
    print(f"{out}: {model.lowbit_spec['name']} exported ({size} bytes)")
    return 0
