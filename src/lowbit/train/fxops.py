"""fx node -> graph op, one function per kind of node (used by ``lowbit.train.fxgraph``)."""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from . import quantizers as Q
from .fxgraph import ExportError, Traced, _pair, _refuse
from .layers import QuantMixin
from .sbn import EXPORT_EPS, ShiftBatchNorm

__all__ = ["module_op", "function_op"]


def _conv(t: Traced, node: fx.Node, name: str, m: nn.Conv2d) -> None:
    if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros" \
            or isinstance(m.padding, str):
        raise ExportError(f"export: conv {name!r}: only groups=1, dilation=1 and zero padding "
                          f"given as numbers are supported")
    bias = t.param(f"{name}.bias", m.bias) if m.bias is not None else None
    t.emit(node, "conv2d", [node.args[0]], weight=t.param(f"{name}.weight", m.weight),
           bias=bias, stride=_pair(m.stride), padding=_pair(m.padding))


def _maxpool(node: fx.Node, kernel, stride, padding=0, dilation=1, ceil_mode=False) -> dict:
    if _pair(padding) != [0, 0] or _pair(dilation) != [1, 1] or ceil_mode:
        raise ExportError(f"export: node {node.name!r}: max-pooling with padding, dilation or "
                          f"ceil_mode is not supported")
    return {"kernel": _pair(kernel), "stride": _pair(stride if stride not in (None, []) else kernel)}


def _avgpool(node: fx.Node, kernel, stride, padding=0, ceil_mode=False,
             count_include_pad=True, divisor_override=None) -> dict:
    if ceil_mode or divisor_override is not None:
        raise ExportError(f"export: node {node.name!r}: avg-pooling with ceil_mode or "
                          f"divisor_override is not supported")
    return {"kernel": _pair(kernel), "stride": _pair(stride if stride not in (None, []) else kernel),
            "padding": _pair(padding), "count_include_pad": bool(count_include_pad)}


def _global(node: fx.Node, size: Any) -> None:
    if _pair(size) != [1, 1]:
        raise ExportError(f"export: node {node.name!r}: adaptive average pooling is supported "
                          f"to output size 1 only, got {size!r}")


def _upsample(node: fx.Node, scale: Any, mode: str, size: Any = None) -> dict:
    if size is not None or mode != "nearest" or scale is None:
        raise ExportError(f"export: node {node.name!r}: upsampling is supported as "
                          f"mode='nearest' with an integer scale_factor only")
    s = scale if isinstance(scale, (tuple, list)) else (scale, scale)
    if any(float(a) != int(a) or int(a) < 1 for a in s):
        raise ExportError(f"export: node {node.name!r}: upsampling scale must be a positive "
                          f"integer, got {scale!r}")
    return {"scale": [int(a) for a in s]}


def module_op(t: Traced, node: fx.Node, m: nn.Module) -> None:
    name = node.target
    x = node.args[0] if node.args else None
    if isinstance(m, QuantMixin):
        op = t.qlayer_op(name, m, (1,) + t.shape(x)[0:], t.tensors)
        op.update(inputs=[t.value(x, name)], outputs=[node.name])
        t.ops.append(op)
    elif isinstance(m, nn.Conv2d):
        _conv(t, node, name, m)
    elif isinstance(m, nn.Linear):
        if len(t.shape(x)) != 2:
            raise ExportError(f"export: linear {name!r}: its input has shape {t.shape(x)}; "
                              f"flatten to (N, features) first")
        t.emit(node, "dense", [x], weight=t.param(f"{name}.weight", m.weight),
               bias=t.param(f"{name}.bias", m.bias) if m.bias is not None else None)
    elif isinstance(m, ShiftBatchNorm):
        # inference SBN = ordinary BN with power-of-two weight, var 1 - eps (lowbit.train.sbn):
        # the module's eval forward is this very batchnorm, so the runtime equals torch
        t.emit(node, "batchnorm", [x], gamma=t.param(f"{name}.scale", m.inference_scale()),
               beta=t.param(f"{name}.bias", m.bias),
               mean=t.param(f"{name}.running_mean", m.running_mean),
               var=t.param(f"{name}.unit_var", m.unit_var()), eps=float(EXPORT_EPS))
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_mean is None or not m.affine:
            raise ExportError(f"export: batchnorm {name!r}: needs running statistics and "
                              f"affine=True")
        t.emit(node, "batchnorm", [x], gamma=t.param(f"{name}.weight", m.weight),
               beta=t.param(f"{name}.bias", m.bias),
               mean=t.param(f"{name}.running_mean", m.running_mean),
               var=t.param(f"{name}.running_var", m.running_var), eps=float(m.eps))
    elif isinstance(m, nn.MaxPool2d):
        t.emit(node, "maxpool2d", [x], **_maxpool(node, m.kernel_size, m.stride, m.padding,
                                                  m.dilation, m.ceil_mode))
    elif isinstance(m, nn.AvgPool2d):
        t.emit(node, "avgpool2d", [x], **_avgpool(node, m.kernel_size, m.stride, m.padding,
                                                  m.ceil_mode, m.count_include_pad,
                                                  m.divisor_override))
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        _global(node, m.output_size)
        t.emit(node, "global_avgpool", [x])
    elif isinstance(m, nn.Upsample):
        t.emit(node, "upsample", [x], **_upsample(node, m.scale_factor, m.mode, m.size))
    elif isinstance(m, nn.ReLU):
        t.emit(node, "relu", [x])
    elif isinstance(m, nn.Hardtanh):     # ReLU6 is a Hardtanh(0, 6)
        t.emit(node, "hardtanh", [x], min=float(m.min_val), max=float(m.max_val))
    elif isinstance(m, nn.PReLU):
        t.emit(node, "prelu", [x], weight=t.param(f"{name}.weight", m.weight))
    elif isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ExportError(f"export: flatten {name!r} must flatten dims 1..-1")
        _flatten(t, node, x)
    elif isinstance(m, Q.XnorSign):
        raise _refuse(node, f"module {name!r} (xnor_sign as a module; use it as a layer's "
                            f"input_quantizer)")
    elif isinstance(m, Q.SteSign):
        t.emit(node, "sign", [x])
    elif isinstance(m, Q.DorefaActivation):
        if m.bits >= 32:
            t.emit(node, "hardtanh", [x], min=0.0, max=1.0)
        else:
            t.emit(node, "act_quant", [x], bits=int(m.bits))
    elif isinstance(m, (Q.DorefaGrad, nn.Dropout, nn.Identity)):
        t.alias[node.name] = t.value(x, name)
    else:
        raise _refuse(node, f"module {name!r} ({type(m).__name__})")


def _flatten(t: Traced, node: fx.Node, x: Any) -> None:
    if len(t.shape(x)) <= 1:
        t.alias[node.name] = t.value(x, node.name)      # already (N, F)
    else:
        t.emit(node, "flatten", [x])


def _arg(node: fx.Node, i: int, key: str, default: Any = None) -> Any:
    return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)


def _cat(t: Traced, node: fx.Node) -> None:
    xs = _arg(node, 0, "tensors")
    dim = _arg(node, 1, "dim", 0)
    rank = len(t.shape(xs[0])) + 1 if xs else 0
    if dim not in (1, 1 - rank) or len(xs) < 2:
        raise ExportError(f"export: node {node.name!r}: torch.cat is supported along the "
                          f"channel axis (dim=1) of two or more tensors, got dim={dim}")
    t.emit(node, "concat", list(xs))


def _is_flatten(t: Traced, node: fx.Node) -> bool:
    target, args = node.target, node.args
    if target is torch.flatten or target == "flatten":
        return _arg(node, 1, "start_dim", 0) == 1 and _arg(node, 2, "end_dim", -1) == -1
    if target in ("view", "reshape") or target is torch.reshape:
        shape = args[1:] if target != torch.reshape else args[1]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        return len(shape) == 2 and shape[1] == -1
    return False


def _binary_add(t: Traced, node: fx.Node) -> bool:
    a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or node.kwargs.get("alpha", 1) != 1:
        raise ExportError(f"export: node {node.name!r}: addition is supported between two "
                          f"tensors of the same shape only (residual shortcuts)")
    if t.shape(a) != t.shape(b):
        raise ExportError(f"export: node {node.name!r}: adds shapes {t.shape(a)} and "
                          f"{t.shape(b)}; broadcasting is not supported")
    t.emit(node, "add", [a, b])
    return True


def function_op(t: Traced, node: fx.Node) -> None:
    target, x = node.target, node.args[0] if node.args else None
    if target in (operator.add, operator.iadd, torch.add) or (
            node.op == "call_method" and target in ("add", "add_", "__add__")):
        _binary_add(t, node)
    elif target in (torch.cat, torch.concat):
        _cat(t, node)
    elif target in (torch.relu, F.relu) or target in ("relu", "relu_"):
        t.emit(node, "relu", [x])
    elif target is F.hardtanh or target in (torch.clamp, torch.clip, "clamp", "clip"):
        lo = _arg(node, 1, "min_val" if target is F.hardtanh else "min", -1.0)
        hi = _arg(node, 2, "max_val" if target is F.hardtanh else "max", 1.0)
        if not all(isinstance(v, (int, float)) for v in (lo, hi)):
            raise ExportError(f"export: node {node.name!r}: clamp bounds must be numbers")
        t.emit(node, "hardtanh", [x], min=float(lo), max=float(hi))
    elif target is F.max_pool2d:
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
        kw = dict(zip(names, node.args[1:]), **node.kwargs)
        kw.pop("return_indices", None)
        t.emit(node, "maxpool2d", [x], **_maxpool(node, kw["kernel_size"], kw.get("stride"),
                                                  kw.get("padding", 0), kw.get("dilation", 1),
                                                  kw.get("ceil_mode", False)))
    elif target is F.avg_pool2d:
        names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override")
        kw = dict(zip(names, node.args[1:]), **node.kwargs)
        t.emit(node, "avgpool2d", [x], **_avgpool(node, kw.pop("kernel_size"), kw.pop("stride", None), **kw))
    elif target is F.adaptive_avg_pool2d:
        _global(node, _arg(node, 1, "output_size"))
        t.emit(node, "global_avgpool", [x])
    elif target in ("mean", torch.mean) and tuple(_arg(node, 1, "dim", ())) in ((2, 3), (-2, -1)):
        t.emit(node, "global_avgpool", [x])
        if not _arg(node, 2, "keepdim", False):            # (N, C, 1, 1) -> (N, C)
            t.ops[-1].update(name=node.name + "_pool", outputs=[node.name + "_pool"])
            t.ops.append({"op": "flatten", "name": node.name, "inputs": [node.name + "_pool"],
                          "outputs": [node.name]})
    elif target is F.interpolate:
        t.emit(node, "upsample", [x], **_upsample(node, _arg(node, 2, "scale_factor"),
                                                  _arg(node, 3, "mode", "nearest"),
                                                  _arg(node, 1, "size")))
    elif _is_flatten(t, node):
        _flatten(t, node, x)
    elif target in ("size", "dim") or target in ("contiguous",) or target is F.dropout:
        if target in ("contiguous",) or target is F.dropout:
            t.alias[node.name] = t.value(x, node.name)
    else:
        what = f"{node.op} {getattr(target, '__name__', target)}"
        raise _refuse(node, what)
