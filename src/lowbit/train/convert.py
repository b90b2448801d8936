"""Convert your own float model in one call, larq / TF-MOT style, and keep latent weights clipped
in your own training loop.

    quantize(model, "bnn")                  # or "xnor", "bwn", "twn", "dorefa:W,A,G"
    quantize_report(model)                  # which layer became what, and why others stayed float
    opt = ClipOptimizer(torch.optim.Adam(model.parameters()), model)   # or:
    handle = clip_after_step(optimizer, model)

Schemes -- the quantizers of the registry recipes (:mod:`lowbit.train.recipes`), per swapped layer:

======================  ===========================  ===================================  =======
scheme                  input quantizer              weight quantizer                     latent
======================  ===========================  ===================================  =======
``bnn``                 ``ste_sign``: sign(x)        ``ste_sign``: sign(W)                [-1, 1]
``xnor``                ``xnor_sign``: sign(x) * K   ``bwn``: alpha sign(W), alpha =      --
                                                     mean|W| per output channel
``bwn``                 float                        ``bwn`` (as above)                   --
``twn``                 float                        ``ternary``: alpha t, t in {-1,0,1},  --
                                                     Delta = 0.7 mean|W| (per layer)
``dorefa:W,A,G``        ``dorefa_act(A)``:           ``dorefa_weight(W)``:                --
                        quantize_A(clip(x, 0, 1))    2 quantize_W(tanh W / 2max|tanh W|
                                                     + 1/2) - 1  (W = 1: E|W| sign(W))
======================  ===========================  ===================================  =======

BNN: Hubara, Courbariaux et al. 2016; XNOR-Net / BWN: Rastegari et al. 2016 (K = the box-filtered
mean |input| over channels); TWN: Li et al. 2016; DoReFa-Net: Zhou et al. 2016 with
quantize_k(r) = round((2^k - 1) r) / (2^k - 1).  For ``dorefa`` with G < 32 each swapped layer
also gets ``grad_quantizer = DorefaGrad(G)`` (identity forward; backward the G-bit noisy
gradient 2 max|g| (quantize_G(g / 2max|g| + 1/2 + N(G)) - 1/2)), the place where
``dorefa-lenet5`` puts its ``grad`` modules: right after the layer.  Binary-input convolutions
pad with -1 (a zero cannot be represented; see :mod:`lowbit.train.layers`).

Which layers: every module whose type is exactly ``nn.Conv2d`` or ``nn.Linear``, found by
``model.named_modules()`` (so in *module registration order* -- the order the ``__init__``
assigned them -- not the order ``forward`` calls them).  The first and the last of these stay
float (``keep_first`` / ``keep_last``, as every paper does).  ``skip`` names modules to keep
float; a name also covers everything below it (``skip=["head"]``).  Left float with one
:class:`QuantizeWarning` listing them: convolutions with groups != 1, dilation != 1,
``padding_mode`` other than ``'zeros'`` or string padding (``'same'``) -- the quantized layers
and the runtime do not implement them -- and subclasses of nn.Conv2d / nn.Linear (their own
forward could not be kept).  Nothing else changes: BatchNorm, activations, pooling, residual
adds, hooks of other modules.  Forward hooks registered on a swapped layer itself are dropped.

A converted model needs fine-tuning: naive binarization of a trained net loses almost all
accuracy (AlexNet: 0.2% top-1, XNOR-Net paper).  Train it with :func:`lowbit.train.fit`, or
with your own loop wrapped by :class:`ClipOptimizer` / :func:`clip_after_step` -- lowbit's
layers expect ``post_step()`` after every optimizer step (BNN clips latent weights to
[-1, 1]; pruned layers re-apply their masks), which ``fit`` does and a plain loop does not.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Iterable, NamedTuple

import torch
from torch import nn
from torch.optim import Optimizer

from . import quantizers as Q
from .layers import QuantConv2d, QuantLinear, QuantMixin
from .recipes import parse_bits

__all__ = ["quantize", "quantize_report", "SCHEMES", "QuantizeWarning", "ClipOptimizer",
           "clip_after_step", "apply_post_step"]

SCHEMES = ("bnn", "xnor", "bwn", "twn", "dorefa:W,A,G")


class QuantizeWarning(UserWarning):
    """Some Conv2d / Linear layers were left float because lowbit cannot quantize them."""


class _Scheme(NamedTuple):
    name: str                            # canonical spelling, e.g. "dorefa:1,2,6"
    input: Callable[[], Any]             # () -> input quantizer module or None
    weight: Callable[[], Any]            # () -> weight quantizer module
    grad_bits: int                       # 32: no gradient quantizer


_FIXED = {
    "bnn": (Q.SteSign, Q.SteSign),
    "xnor": (Q.XnorSign, lambda: Q.BinaryWeight(per_channel=True)),
    "bwn": (lambda: None, lambda: Q.BinaryWeight(per_channel=True)),
    "twn": (lambda: None, lambda: Q.Ternary(per_channel=False)),
}


def _parse_scheme(scheme: Any) -> _Scheme:
    if not isinstance(scheme, str):
        raise TypeError(f"scheme: expected a string, one of {', '.join(SCHEMES)}; "
                        f"got {type(scheme).__name__}")
    s = scheme.strip().lower()
    if s in _FIXED:
        make_in, make_w = _FIXED[s]
        return _Scheme(s, make_in, make_w, 32)
    if s == "dorefa" or s.startswith("dorefa:"):
        spec = s.partition(":")[2].strip()
        if not spec:
            raise ValueError(f"scheme {scheme!r}: DoReFa needs its bits, 'dorefa:W,A,G' "
                             f"(weight, activation, gradient bits), e.g. 'dorefa:1,2,6' or "
                             f"'dorefa:1,2,32' (float gradients)")
        try:
            w, a, g = parse_bits(spec)
        except ValueError as e:
            raise ValueError(f"scheme {scheme!r}: {e} (format 'dorefa:W,A,G', each 1..32, "
                             f"e.g. 'dorefa:1,2,6')") from None
        return _Scheme(f"dorefa:{w},{a},{g}", lambda: Q.DorefaActivation(a),
                       lambda: Q.DorefaWeight(w), g)
    raise ValueError(f"scheme {scheme!r}: unknown; expected one of {', '.join(SCHEMES)}")


def _unsupported(m: nn.Module) -> str | None:
    """Why ``m`` (a Conv2d / Linear) cannot become a quantized layer, or None."""
    if type(m) not in (nn.Conv2d, nn.Linear):
        return f"subclass {type(m).__name__} (its own forward would be lost)"
    if isinstance(m, nn.Conv2d):
        why = []
        if m.groups != 1:
            why.append(f"groups={m.groups}")
        if tuple(m.dilation) != (1, 1):
            why.append(f"dilation={tuple(m.dilation)}")
        if m.padding_mode != "zeros":
            why.append(f"padding_mode={m.padding_mode!r}")
        if isinstance(m.padding, str):
            why.append(f"padding={m.padding!r}")
        if why:
            return ", ".join(why)
    return None


def _swap(m: nn.Module, scheme: _Scheme) -> QuantMixin:
    """A quantized twin of ``m`` with the same hyper-parameters, weights, bias, device, dtype,
    requires_grad flags and train/eval mode."""
    kw = dict(bias=m.bias is not None, input_quantizer=scheme.input(),
              weight_quantizer=scheme.weight())
    if isinstance(m, nn.Conv2d):
        new = QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                          **kw)
    else:
        new = QuantLinear(m.in_features, m.out_features, **kw)
    if scheme.grad_bits < 32:
        new.grad_quantizer = Q.DorefaGrad(scheme.grad_bits)
    new.to(device=m.weight.device, dtype=m.weight.dtype)
    with torch.no_grad():
        for key in ("weight", "bias"):
            old_p, new_p = getattr(m, key), getattr(new, key)
            if old_p is not None:
                new_p.copy_(old_p)            # keeps the new layer's NHWC weight layout
                new_p.requires_grad_(old_p.requires_grad)
    new.train(m.training)
    return new


def _describe(m: nn.Module) -> dict:
    if isinstance(m, QuantMixin):
        iq, wq = m.input_quantizer, m.weight_quantizer
        gq = getattr(m, "grad_quantizer", None)
        return {"type": type(m).__name__,
                "input": getattr(iq, "name", type(iq).__name__) if iq is not None else "float",
                "input_bits": m.input_bits,
                "weight": getattr(wq, "name", type(wq).__name__) if wq is not None else "float",
                "weight_bits": m.weight_bits,
                "grad_bits": getattr(gq, "bits", 32) if gq is not None else 32}
    return {"type": type(m).__name__, "input": "float", "input_bits": 32, "weight": "float",
            "weight_bits": 32, "grad_bits": 32}


def quantize_report(model: nn.Module) -> dict[str, dict]:
    """``{name: info}`` for every Conv2d / Linear (float or quantized) of ``model``, in
    ``named_modules()`` order.  ``info``: ``type``, ``input`` / ``weight`` (quantizer registry
    name or ``"float"``), ``input_bits``, ``weight_bits``, ``grad_bits`` and, for layers
    :func:`quantize` left float, ``reason`` (``"first"``, ``"last"``, ``"skip"`` or why it is
    unsupported).  Prints nothing.  ``model.lowbit_quantized["scheme"]`` is the scheme of the
    last :func:`quantize` call on ``model``."""
    reasons = (getattr(model, "lowbit_quantized", None) or {}).get("float", {})
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            out[name] = _describe(m)
            if not isinstance(m, QuantMixin) and name in reasons:
                out[name]["reason"] = reasons[name]
    return out


def quantize(model: nn.Module, scheme: str, *, keep_first: bool = True, keep_last: bool = True,
             skip: Iterable[str] = (), inplace: bool = False) -> nn.Module:
    """Swap the ``nn.Conv2d`` / ``nn.Linear`` layers of ``model`` for :class:`QuantConv2d` /
    :class:`QuantLinear` with the quantizers of ``scheme`` (module docstring table).

    Hyper-parameters (in/out sizes, kernel, stride, padding, bias), weights and bias are copied
    exactly: each swapped layer's latent float weights equal the original ones.  The first and
    last Conv2d / Linear in ``named_modules()`` (registration) order stay float unless
    ``keep_first`` / ``keep_last`` is False; names in ``skip`` (and everything under them) stay
    float; an unknown name in ``skip`` is an error.  Unsupported convolutions (groups,
    dilation, padding_mode, string padding) and Conv2d / Linear subclasses stay float with one
    :class:`QuantizeWarning`.  Already quantized layers are left alone (and not counted as
    first / last).

    Returns a deep copy (the argument is untouched) unless ``inplace`` is True, with
    ``lowbit_quantized = {"scheme": ..., "quantized": [names], "float": {name: reason}}`` set on
    it (see also :func:`quantize_report`).  The result stays traceable with
    ``torch.fx.symbolic_trace``.  Prints nothing.
    """
    sch = _parse_scheme(scheme)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    skip = [skip] if isinstance(skip, str) else [str(s) for s in skip]
    names = {n for n, _ in model.named_modules()}
    unknown = [s for s in skip if s not in names]
    if unknown:
        raise ValueError(f"skip: no module named {', '.join(map(repr, unknown))} in the model "
                         f"(names are those of model.named_modules(), e.g. 'features.0')")
    if not inplace:
        model = copy.deepcopy(model)

    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, QuantMixin)]
    kept: dict[str, str] = {}
    if layers and keep_first:
        kept[layers[0][0]] = "first"
    if layers and keep_last:
        kept.setdefault(layers[-1][0], "last")
    for n, _ in layers:
        if n not in kept and any(s == "" or n == s or n.startswith(s + ".") for s in skip):
            kept[n] = "skip"
    unsupported = {n: why for n, m in layers if n not in kept
                   for why in [_unsupported(m)] if why is not None}
    kept.update(unsupported)
    if unsupported:
        warnings.warn("quantize: left float (not supported by lowbit's quantized layers): "
                      + "; ".join(f"{n} ({why})" for n, why in unsupported.items()),
                      QuantizeWarning, stacklevel=2)

    swapped = {id(m): _swap(m, sch) for n, m in layers if n not in kept}
    for parent in list(model.modules()):
        for cname, child in list(parent._modules.items()):
            if child is not None and id(child) in swapped:
                setattr(parent, cname, swapped[id(child)])
    if id(model) in swapped:               # the model itself was a single Conv2d / Linear
        model = swapped[id(model)]
    model.lowbit_quantized = {"scheme": sch.name,
                              "quantized": [n for n, m in layers if n not in kept],
                              "float": kept}
    return model


# -- latent-weight clipping in your own training loop ---------------------------------------------

def apply_post_step(model: nn.Module) -> None:
    """Call ``m.post_step()`` under ``torch.no_grad()`` on every module of ``model`` that has one,
    as :func:`lowbit.train.fit` does after each optimizer step: quantized layers clamp their
    latent weights to [-c, c] (BNN: W <- clip(W, -1, 1), Hubara et al. 2016, so that a weight
    far beyond the sign's STE window, |W| <= 1, can still flip), pruned layers re-apply their
    masks."""
    with torch.no_grad():
        for m in model.modules():
            fn = getattr(m, "post_step", None)
            if callable(fn):
                fn()


def clip_after_step(optimizer: Optimizer, model: nn.Module):
    """Register :func:`apply_post_step` (``model``) as a step post-hook of ``optimizer``
    (``Optimizer.register_step_post_hook``): after every ``optimizer.step()`` the latent weights
    are clipped.  Returns the hook handle; ``handle.remove()`` undoes it."""

    def _hook(opt, args, kwargs):
        apply_post_step(model)

    return optimizer.register_step_post_hook(_hook)


class ClipOptimizer(Optimizer):
    """``optimizer`` whose ``step()`` runs the wrapped step, then :func:`apply_post_step` on
    ``model``; everything else (``param_groups``, ``state``, ``defaults``, ``zero_grad``,
    ``state_dict``, ``load_state_dict``, ``add_param_group``, hook registration, any other
    attribute) is the wrapped optimizer's.  It is an ``Optimizer`` instance, so LR schedulers
    accept it; its ``state_dict`` is the wrapped one's (load it into either)."""

    def __init__(self, optimizer: Optimizer, model: nn.Module):  # no Optimizer.__init__: the
        if not isinstance(optimizer, Optimizer):                  # state lives in `optimizer`
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        self.optimizer, self.model = optimizer, model

    def step(self, closure=None):
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        apply_post_step(self.model)
        return loss

    param_groups = property(lambda self: self.optimizer.param_groups,
                            lambda self, v: setattr(self.optimizer, "param_groups", v))
    state = property(lambda self: self.optimizer.state,
                     lambda self, v: setattr(self.optimizer, "state", v))
    defaults = property(lambda self: self.optimizer.defaults,
                        lambda self, v: setattr(self.optimizer, "defaults", v))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group) -> None:
        self.optimizer.add_param_group(param_group)

    def register_step_pre_hook(self, hook):
        return self.optimizer.register_step_pre_hook(hook)

    def register_step_post_hook(self, hook):
        """Runs after the wrapped step, before the clipping."""
        return self.optimizer.register_step_post_hook(hook)

    def register_state_dict_pre_hook(self, hook, prepend: bool = False):
        return self.optimizer.register_state_dict_pre_hook(hook, prepend)

    def register_state_dict_post_hook(self, hook, prepend: bool = False):
        return self.optimizer.register_state_dict_post_hook(hook, prepend)

    def register_load_state_dict_pre_hook(self, hook, prepend: bool = False):
        return self.optimizer.register_load_state_dict_pre_hook(hook, prepend)

    def register_load_state_dict_post_hook(self, hook, prepend: bool = False):
        return self.optimizer.register_load_state_dict_post_hook(hook, prepend)

    def __getattr__(self, name: str):
        if name in ("optimizer", "model") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"ClipOptimizer({self.optimizer!r})"
