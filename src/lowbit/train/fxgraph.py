"""Any ``nn.Module`` -> the op list of a version-2 graph (``lowbit.codec.graph``), via torch.fx.

``trace(model, input_shape)`` traces the model with ``torch.fx`` (lowbit's quantized layers and
quantizers are leaves), runs it once on zeros of shape ``(1, *input_shape)`` to record every
value's shape (``ShapeProp``), and maps each node to a graph op; the values are named after
the fx nodes, the tensors after the model's ``state_dict`` keys.  What maps to what:

    modules    QuantConv2d / QuantLinear -> qconv2d / qdense (``export.qlayer_op``),
               Conv2d -> conv2d, Linear -> dense, BatchNorm1d/2d -> batchnorm,
               ShiftBatchNorm1d/2d -> batchnorm (power-of-two weight, lowbit.train.sbn),
               MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1) -> global_avgpool,
               Upsample(nearest, integer scale) -> upsample, ReLU, ReLU6 / Hardtanh ->
               hardtanh, PReLU, Flatten, ste_sign -> sign, dorefa_act -> act_quant;
               Dropout / Identity / dorefa_grad vanish
    functions  +, torch.add, torch.cat / concat (dim 1), relu, hardtanh, clamp, max_pool2d,
               avg_pool2d, adaptive_avg_pool2d(1), x.mean((2, 3)), interpolate(nearest),
               flatten, x.view(x.size(0), -1) / reshape

Anything else -- an unsupported module or function, data-dependent control flow -- raises
:class:`ExportError` naming the node and listing what is supported, so a model the runtime
cannot run is never written.
"""
from __future__ import annotations

import traceback
from typing import Any, Callable

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from . import quantizers as Q
from .layers import QuantMixin
from .sbn import ShiftBatchNorm

__all__ = ["ExportError", "Traced", "trace", "SUPPORTED_MODULES", "SUPPORTED_FUNCTIONS"]

SUPPORTED_MODULES = ("QuantConv2d", "QuantLinear", "Conv2d", "Linear", "BatchNorm1d",
                     "BatchNorm2d", "ShiftBatchNorm1d/2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d(1)",
                     "Upsample(nearest)", "ReLU", "ReLU6", "Hardtanh", "PReLU", "Flatten",
                     "ste_sign", "dorefa_act", "Dropout", "Identity", "dorefa_grad")
SUPPORTED_FUNCTIONS = ("+", "torch.add", "torch.cat(dim=1)", "relu", "hardtanh", "clamp",
                       "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d(1)", "mean((2, 3))",
                       "interpolate(nearest)", "flatten(1)", "view/reshape(N, -1)")


class ExportError(ValueError):
    """A model that cannot be written as a lowbit graph (names the node)."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QuantMixin, Q.Quantizer, ShiftBatchNorm)) \
            or super().is_leaf_module(m, qualname)


def _where_in_user_code(e: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if "/torch/" not in f.filename and "/lowbit/train/fxgraph" not in f.filename]
    return f" at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].line})" if frames else ""


def _pair(v: Any) -> list[int]:
    return [int(a) for a in v] if isinstance(v, (tuple, list)) else [int(v), int(v)]


class Traced:
    """The result of :func:`trace`: ``ops`` (value-named, pre-fold), ``tensors`` (name ->
    numpy array), ``shapes`` (value -> shape without the batch axis), ``outputs``."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], input_name: str,
                 qlayer_op: Callable):
        self.model, self.input_name, self.qlayer_op = model, input_name, qlayer_op
        self.ops: list[dict] = []
        self.tensors: dict[str, Any] = {}       # name -> codec.Tensor
        self.shapes: dict[str, tuple] = {}
        self.alias: dict[str, str] = {}
        self.outputs: list[str] = []
        self.input_shape = tuple(input_shape)

    # -- helpers ----------------------------------------------------------------------------
    def value(self, node: Any, where: str) -> str:
        if not isinstance(node, fx.Node):
            raise ExportError(f"export: node {where!r}: expected a tensor argument, got "
                              f"{node!r}")
        return self.alias.get(node.name, node.name)

    def emit(self, node: fx.Node, kind: str, inputs: list, **attrs: Any) -> None:
        self.ops.append({"op": kind, "name": node.name,
                         "inputs": [self.value(a, node.name) for a in inputs],
                         "outputs": [node.name], **attrs})

    def param(self, name: str, t: torch.Tensor) -> str:
        from lowbit import codec
        self.tensors[name] = codec.model.raw(t.detach().cpu().numpy().astype("float32"))
        return name

    def shape(self, node: Any) -> tuple:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def _refuse(node: fx.Node, what: str) -> ExportError:
    subject = what if node.op == "call_module" else f"node {node.name!r} ({what})"
    return ExportError(
        f"export: {subject} has no lowbit graph op; supported modules: "
        f"{', '.join(SUPPORTED_MODULES)}; functions: {', '.join(SUPPORTED_FUNCTIONS)}")


def trace(model: nn.Module, input_shape: tuple[int, ...], qlayer_op: Callable,
          input_name: str = "input") -> Traced:
    """Trace ``model`` (eval mode) for inputs ``(N, *input_shape)``; ``qlayer_op(name, module,
    in_shape, tensors) -> op`` writes a quantized layer."""
    if _Tracer().is_leaf_module(model, ""):     # a bare layer: trace it as a one-layer model
        model = nn.Sequential(model)
    try:
        graph = _Tracer().trace(model)
    except Exception as e:   # fx raises TraceError, TypeError, ... from inside user code
        raise ExportError(f"export: {type(model).__name__}.forward cannot be traced by torch.fx"
                          f"{_where_in_user_code(e)}: {e}. Data-dependent control flow (if / "
                          f"for on tensor values) is not supported: write forward as a fixed "
                          f"sequence of supported ops") from None
    gm = fx.GraphModule(model, graph)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros((1,) + tuple(input_shape)))
    except Exception as e:
        cause = e.__cause__ or e           # ShapeProp wraps the model's own error
        raise ExportError(f"export: running {type(model).__name__} on an input of shape "
                          f"{tuple(input_shape)} failed: {type(cause).__name__}: "
                          f"{str(cause).splitlines()[0] if str(cause) else ''} "
                          f"(is --input-size right?)") from None
    t = Traced(model, input_shape, input_name, qlayer_op)
    from .fxops import function_op, module_op
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if t.alias:
                raise ExportError(f"export: node {node.name!r}: models with more than one input "
                                  f"are not supported")
            t.alias[node.name] = input_name
            t.shapes[input_name] = t.shape(node)[1:]
            continue
        if node.op == "output":
            outs = node.args[0]
            outs = list(outs.values()) if isinstance(outs, dict) else (
                list(outs) if isinstance(outs, (tuple, list)) else [outs])
            t.outputs = [t.value(o, "output") for o in outs]
            continue
        if node.op == "get_attr":
            raise ExportError(f"export: node {node.name!r} reads the tensor {node.target!r} "
                              f"directly; use it inside a module (e.g. nn.PReLU) instead")
        t.shapes[node.name] = t.shape(node)[1:]
        if node.op == "call_module":
            module_op(t, node, gm.get_submodule(node.target))
        else:
            function_op(t, node)
    return t
