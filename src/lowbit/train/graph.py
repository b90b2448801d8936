"""Float op graph of a torch model, in the model-file schema of ``lowbit.runtime.float_ops``.

``graph_of(model, input_shape)`` traces the model with ``torch.fx`` and maps each node of its
(single-chain) data flow to an op: ``nn.Conv2d`` -> conv2d, ``nn.Linear`` -> dense,
``nn.MaxPool2d`` / ``F.max_pool2d`` -> maxpool2d, ReLU -> relu, ``torch.flatten(x, 1)`` /
``nn.Flatten()`` / ``x.view(x.size(0), -1)`` -> flatten; Dropout and Identity vanish.
Tensor names are the model's ``state_dict`` keys.  Anything else is refused with the name of
the node, so a model the float executor cannot run is never written silently.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn


def _conv(name: str, m: nn.Conv2d) -> dict[str, Any]:
    if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros" \
            or isinstance(m.padding, str):
        raise ValueError(f"graph: conv {name!r}: only groups=1, dilation=1, zero padding given "
                         f"as numbers are supported")
    return {"op": "conv2d", "weight": f"{name}.weight",
            "bias": f"{name}.bias" if m.bias is not None else None,
            "stride": list(m.stride), "padding": list(m.padding)}


def _pool(kernel: Any, stride: Any, padding: Any = 0, dilation: Any = 1,
          ceil_mode: bool = False) -> dict[str, Any]:
    pair = lambda v: list(v) if isinstance(v, (tuple, list)) else [int(v), int(v)]
    if pair(padding) != [0, 0] or pair(dilation) != [1, 1] or ceil_mode:
        raise ValueError("graph: maxpool2d with padding, dilation or ceil_mode is not supported")
    return {"op": "maxpool2d", "kernel": pair(kernel),
            "stride": pair(stride if stride not in (None, []) else kernel)}


def _module_op(name: str, m: nn.Module) -> dict[str, Any] | None:
    if isinstance(m, nn.Conv2d):
        return _conv(name, m)
    if isinstance(m, nn.Linear):
        return {"op": "dense", "weight": f"{name}.weight",
                "bias": f"{name}.bias" if m.bias is not None else None}
    if isinstance(m, nn.ReLU):
        return {"op": "relu"}
    if isinstance(m, nn.MaxPool2d):
        return _pool(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ValueError(f"graph: flatten {name!r} must flatten dims 1..-1")
        return {"op": "flatten"}
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return None
    raise ValueError(f"graph: module {name!r} ({type(m).__name__}) has no float-graph op")


def _function_op(node: fx.Node) -> dict[str, Any] | None:
    t, args, kw = node.target, node.args, node.kwargs
    if t in (torch.relu, F.relu) or (node.op == "call_method" and t == "relu"):
        return {"op": "relu"}
    if t is torch.flatten or (node.op == "call_method" and t == "flatten"):
        start = args[1] if len(args) > 1 else kw.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kw.get("end_dim", -1)
        if start == 1 and end == -1:
            return {"op": "flatten"}
    if node.op == "call_method" and t in ("view", "reshape") and len(args) == 3 \
            and args[2] == -1:
        return {"op": "flatten"}  # x.view(x.size(0), -1)
    if node.op == "call_method" and t == "size":
        return None
    if t is F.max_pool2d:
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
        vals = dict(zip(names, args[1:]), **kw)
        return _pool(vals["kernel_size"], vals.get("stride"), vals.get("padding", 0),
                     vals.get("dilation", 1), vals.get("ceil_mode", False))
    raise ValueError(f"graph: node {node.name!r} ({node.op} {t}) has no float-graph op")


def graph_of(model: nn.Module, input_shape: tuple[int, ...],
             normalization: dict | None = None) -> dict[str, Any]:
    """The float graph of ``model`` for inputs of shape ``(N, *input_shape)``."""
    traced = fx.symbolic_trace(model)
    ops: list[dict[str, Any]] = []
    prev: fx.Node | None = None
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            prev = node
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                raise ValueError("graph: the output is not the last op of a single chain")
            break
        if node.op == "call_method" and node.target == "size":
            continue
        if node.op == "get_attr":
            raise ValueError(f"graph: node {node.name!r} reads a tensor directly; unsupported")
        if not node.args or node.args[0] is not prev:
            raise ValueError(f"graph: node {node.name!r} does not continue a single chain "
                             f"(branches and residuals are not supported by the float graph)")
        op = (_module_op(node.target, traced.get_submodule(node.target))
              if node.op == "call_module" else _function_op(node))
        if op is not None:
            ops.append(op)
        prev = node
    spec: dict[str, Any] = {"shape": list(input_shape), "dtype": "uint8"}
    if normalization is not None:
        spec["normalization"] = dict(normalization)
    return {"input": spec, "ops": ops}
