"""Export a trained torch model to a lowbit model file (the graph the runtime executes).

``export_model(model, path, normalization, input_shape=(C, H, W))`` / ``lowbit export CKPT OUT``.

Any ``nn.Module`` made of supported modules and functions is traced with torch.fx
(``lowbit.train.fxgraph``) into a version-2 graph (``lowbit.codec.graph``): a DAG, so residual
shortcuts, concatenations and several outputs are kept.  Quantized layers store their integer
weight levels bit-packed (``lowbit.codec.packed``: 1 plane binary, 2 planes ternary, k planes
k-bit), float layers float32.  A BatchNorm (with a max pool before it and max pools / flattens
after it) between a layer with an exact integer accumulator and sign consumers is folded into
integer thresholds (``lowbit.codec.rewrite``, exact incl. ties), so such layers emit packed bits.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from lowbit import codec
from lowbit.codec.packed import packed
from lowbit.codec import rewrite

from . import quantizers as Q
from .fxgraph import ExportError, trace
from .layers import QuantConv2d, QuantMixin

__all__ = ["export_model", "export_checkpoint", "build_graph", "qlayer_op", "ExportError"]


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


def qlayer_op(name: str, m: QuantMixin, in_shape, tensors: dict) -> dict:
    """The ``qconv2d`` / ``qdense`` op of layer ``m`` (its tensors go into ``tensors``)."""
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


def build_graph(model: nn.Module, normalization: dict | None,
                input_shape=(1, 28, 28)) -> tuple[dict, dict]:
    """(graph, tensors) of ``model`` (put in eval mode) for inputs ``(N, *input_shape)``:
    traced with torch.fx (``lowbit.train.fxgraph``), then sign(BatchNorm) folded into integer
    thresholds and spatial binary dense layers re-packed (``lowbit.codec.rewrite``)."""
    model = model.eval()
    input_shape = tuple(int(v) for v in input_shape)
    t = trace(model, input_shape, qlayer_op)
    spec: dict[str, Any] = {"name": "input", "shape": list(input_shape), "dtype": "uint8"}
    if normalization is not None:
        spec["normalization"] = dict(normalization)
    graph = codec.graph.new_graph([spec], t.ops, t.outputs)
    tensors = dict(t.tensors)
    rewrite.fold_sign_bn(graph, tensors)
    rewrite.repack_spatial_dense(graph, tensors, t.shapes)
    used = {op[k] for op in graph["ops"] for k in codec.graph.OPS[op["op"]][3] if op.get(k)}
    tensors = {k: v for k, v in tensors.items() if k in used}
    graph = codec.graph.parse(graph, "export", tensors)       # what the runtime will check
    return graph, tensors


def export_model(model: nn.Module, path: str | os.PathLike, normalization: dict | None = None,
                 meta: dict | None = None, input_shape=None) -> int:
    """Write ``model`` as a lowbit model file; returns the file size in bytes.  ``input_shape``
    (C, H, W): default the model's ``lowbit_input_shape`` (set by ``fit``), else 1x28x28."""
    if input_shape is None:
        input_shape = getattr(model, "lowbit_input_shape", None) or (1, 28, 28)
    graph, tensors = build_graph(model, normalization, input_shape)
    meta = dict(meta or {})
    spec = getattr(model, "lowbit_spec", None)
    if "model" not in meta and spec:   # registry name + kwargs: lets benchmarks rebuild it
        meta["model"] = {"name": spec["name"], "kwargs": dict(spec.get("kwargs") or {})}
    return codec.save(path, graph, tensors, meta)


def export_checkpoint(checkpoint: str, out: str, input_shape=None, overwrite: bool = False) -> int:
    """``lowbit export CHECKPOINT -o FILE``: print one line; exit code 2 on bad input.  An
    existing ``out`` is refused unless ``overwrite``; ``input_shape`` (C, H, W) overrides the
    shape the checkpoint records (default: the one it was trained on)."""
    import sys
    from lowbit.cliargs import check_output_file
    from .checkpoint import CheckpointError, load_model
    try:
        check_output_file(out, overwrite, source=checkpoint)
        model, meta = load_model(checkpoint)
        shape = tuple(input_shape or meta["input_shape"])
        norm = meta.get("normalization")
        if norm is not None and norm.channels not in (1, shape[0]):
            raise ValueError(f"--input-size {'x'.join(map(str, shape))}: the model was trained "
                             f"on {norm.channels}-channel images")
        size = export_model(model, out, norm.to_dict() if norm is not None else None,
                            {"model": model.lowbit_spec, "source": str(checkpoint)},
                            input_shape=shape)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"lowbit export: error: {e}", file=sys.stderr)
        return 2
    print(f"{out}: {model.lowbit_spec['name']} exported for {'x'.join(map(str, shape))} input "
          f"({size} bytes)")
    return 0
