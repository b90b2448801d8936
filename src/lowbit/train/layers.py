"""Quantized layers: ``QuantConv2d`` and ``QuantLinear``, one mixin over nn.Conv2d / nn.Linear.

    QuantConv2d(in_ch, out_ch, kernel_size, stride=1, padding=0, bias=True, *,
                weight_quantizer=None, input_quantizer=None, pad_value=None, weight_clip="auto")
    QuantLinear(in_features, out_features, bias=True, *,
                weight_quantizer=None, input_quantizer=None, weight_clip="auto")

Quantizers are names for :func:`lowbit.train.quantizers.get` or modules; None = float.

Forward, exactly (what the runtime reproduces):

1. ``Xl, sx = input_quantizer.split(x)``, ``Wl, sw = weight_quantizer.split(W)``: integer
   levels and float scales (float side: ``Xl = x``/``Wl = W``, scale 1).  Examples: BNN
   ``Xl = sign(x)``, ``Wl = sign(W)``; XNOR/BWN ``sw = alpha`` per output channel; TWN
   ``Wl in {-1,0,1}``, ``sw = alpha``; DoReFa ``Xl = round(3 clip(x,0,1))``, ``sx = 1/3``.
2. Padding (conv): ``Xl`` is padded with ``pad_value`` -- by default **-1 when the input
   quantizer is binary** (bits = 1; in the packed layout a -1 is bit 0, so spatial padding is
   all-zero words and ``dot = K - 2 popcount(a XOR w)`` needs no correction) and 0 otherwise
   (k-bit level 0, pixel 0, or float zero padding).
3. ``acc = conv(Xl, Wl)`` (or ``Xl @ Wl.T``), no bias.  When both sides have integer levels the
   accumulator is an exact integer (float32 is exact below 2^24) and is rounded to make that
   explicit.
4. ``y = ((acc * sw) * sx) * K + bias``: ``sw`` per output channel (or per layer), ``sx`` a
   scalar, ``K`` only for ``xnor_sign`` inputs (computed from the *unquantized* input with zero
   padding, see :class:`~lowbit.train.quantizers.XnorSign`).  Float32 throughout.

In eval mode the layer computes exactly these steps.  In training it computes the same values
as ``conv(input_quantizer(x), weight_quantizer(W)) * K + bias`` so that each quantizer's
autograd function supplies its gradient (values agree up to float32 rounding).

BatchNorm, pooling and activations are *separate modules* in the recipes (see
:mod:`lowbit.train.recipes`), so every model's op order is explicit.

Optional ``grad_quantizer`` attribute (None by default): a module applied to the output last,
e.g. DoReFa's ``DorefaGrad(G)`` (identity forward, G-bit gradient backward), which
:func:`lowbit.train.quantize` sets for ``"dorefa:W,A,G"`` with G < 32.  The forward is one free
function wrapped by ``torch.fx.wrap``, so plain ``torch.fx.symbolic_trace`` records each
quantized layer as a single ``call_function`` node (its first argument the layer).

Latent weights: ``post_step()`` (called by the training loop after every optimizer step)
clamps ``W`` to ``[-c, c]`` with ``c = weight_clip``; ``"auto"`` takes the weight quantizer's
``latent_clip`` (1 for ``ste_sign``: the BNN rule), None disables it.
"""
from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from . import quantizers as Q

__all__ = ["QuantMixin", "QuantConv2d", "QuantLinear", "quant_layers"]


class QuantMixin:
    """Shared by QuantConv2d and QuantLinear: quantizers, exact forward, latent clipping and
    cost metadata (``weight_bits``, ``input_bits``, ``packed_weight_bytes``, ``macs``)."""

    def _init_quant(self, weight_quantizer, input_quantizer, weight_clip) -> None:
        self.weight_quantizer = Q.get(weight_quantizer)
        self.input_quantizer = Q.get(input_quantizer)
        if weight_clip == "auto":
            weight_clip = getattr(self.weight_quantizer, "latent_clip", None)
        self.weight_clip = None if weight_clip is None else float(weight_clip)
        self.grad_quantizer = None  # a module applied to the output (see module docstring)

    # -- to be provided by the concrete class ------------------------------------------------
    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _channel_view(self, s: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- forward ------------------------------------------------------------------------------
    @property
    def weight_bits(self) -> int:
        return self.weight_quantizer.bits if self.weight_quantizer is not None else 32

    @property
    def input_bits(self) -> int:
        return self.input_quantizer.bits if self.input_quantizer is not None else 32

    @property
    def integer_accumulator(self) -> bool:
        """True when ``acc`` is an exact integer (both sides quantized to integer levels)."""
        iq, wq = self.input_quantizer, self.weight_quantizer
        return bool(iq is not None and wq is not None and iq.integer_levels and wq.integer_levels)

    def split_weight(self):
        """``(Wl, sw)``: weight levels and scale (None = 1), detached -- what an exporter packs."""
        if self.weight_quantizer is None:
            return self.weight.detach(), None
        levels, scale = self.weight_quantizer.split(self.weight)
        return levels.detach(), None if scale is None else scale.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _quant_forward(self, x)

    def post_step(self) -> None:
        if self.weight_clip is not None:
            with torch.no_grad():
                self.weight.clamp_(-self.weight_clip, self.weight_clip)

    # -- costs (lowbit summary) ---------------------------------------------------------------
    @property
    def fan_in(self) -> int:
        return self.weight[0].numel()

    def packed_weight_bytes(self) -> int:
        """Resident bytes in the runtime layout: each output channel's fan-in packed along the
        last axis into 64-bit words, one bit-plane per weight bit (binary 1, ternary 2,
        five-level 3, k-bit k); float32 for float layers; plus float32 scales and bias."""
        out = self.weight.shape[0]
        bias = 4 * out if self.bias is not None else 0
        if self.weight_bits >= 32:
            return 4 * self.weight.numel() + bias
        _, sw = self.split_weight()
        scales = 0 if sw is None else 4 * (sw.numel() if sw.dim() else 1)
        return out * self.weight_bits * 8 * math.ceil(self.fan_in / 64) + scales + bias

    def float_weight_bytes(self) -> int:
        """The same parameters stored as float32."""
        return 4 * (self.weight.numel() + (self.bias.numel() if self.bias is not None else 0))

    def macs(self, inp, out) -> int:
        """Multiply-accumulates of one call (the ``lowbit.train.summary`` contract)."""
        return int(out.numel()) * self.fan_in

    def op_kind(self) -> str:
        """'binary' (XNOR-popcount), 'bitplane' (both sides <= 8 bits: AND-popcount over
        bit-planes) or 'float' (at least one side float; binary/ternary weights are then
        additions and subtractions but still float work)."""
        wb, ib = self.weight_bits, self.input_bits
        if wb == 1 and ib == 1:
            return "binary"
        if wb <= 8 and ib <= 8:
            return "bitplane"
        return "float"

    def summary_extra(self, inp, out) -> dict:
        """Extra ``lowbit summary`` columns: input bits, binary ops (BOPs = MACs * weight bits *
        input bits for binary / bit-plane layers) and float MACs (the other layers)."""
        macs = self.macs(inp, out)
        low = self.op_kind() != "float"
        return {"in bits": self.input_bits,
                "BOPs": macs * self.weight_bits * self.input_bits if low else 0,
                "float MACs": 0 if low else macs}


def _quant_forward(layer: QuantMixin, x: torch.Tensor) -> torch.Tensor:
    """The forward of every quantized layer (module docstring).  A free function that
    ``torch.fx.wrap`` keeps as one ``call_function`` node, so a model holding quantized
    layers stays traceable by plain ``torch.fx.symbolic_trace`` (the steps branch on
    tensor strides and shapes, which a symbolic trace cannot follow)."""
    iq, wq = layer.input_quantizer, layer.weight_quantizer
    if layer.training:
        xq = x if iq is None else iq(x)
        w = layer.weight if wq is None else wq(layer.weight)
        y = layer._op(xq, w)
    else:
        xl, sx = (x, None) if iq is None else iq.split(x)
        wl, sw = (layer.weight, None) if wq is None else wq.split(layer.weight)
        y = layer._op(xl, wl)
        if layer.integer_accumulator:
            y = torch.round(y)
        if sw is not None:
            y = y * (layer._channel_view(sw) if sw.dim() else sw)
        if sx is not None:
            y = y * sx
    if iq is not None and hasattr(iq, "scale"):
        y = y * iq.scale(x, layer)
    if layer.bias is not None:
        y = y + layer._channel_view(layer.bias)
    gq = getattr(layer, "grad_quantizer", None)
    return y if gq is None else gq(y)


torch.fx.wrap("_quant_forward")


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """``t`` with channels-last strides -- forced even where C = 1 (where ``.contiguous``
    would keep NCHW strides and oneDNN would pick the slower NCHW path)."""
    if t.stride(1) == 1 and t.is_contiguous(memory_format=torch.channels_last):
        return t
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)


class QuantConv2d(QuantMixin, nn.Conv2d):
    """nn.Conv2d with quantized weights and inputs (forward: module docstring).  ``pad_value``
    None picks -1 for a binary input quantizer and 0 otherwise; only ``padding_mode='zeros'``
    and integer padding are supported."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, *, weight_quantizer=None,
                 input_quantizer=None, pad_value: float | None = None, weight_clip="auto"):
        if isinstance(padding, str):
            raise ValueError("QuantConv2d: give padding as integers (explicit padding semantics)")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)
        self._init_quant(weight_quantizer, input_quantizer, weight_clip)
        with torch.no_grad():  # NHWC storage for oneDNN (see _op); values unchanged
            self.weight.data = _nhwc(self.weight.data)
        if pad_value is None:
            pad_value = -1.0 if self.input_bits == 1 else 0.0
        self.pad_value = float(pad_value)

    def _op(self, x, w):
        # channels-last (NHWC) operands: ~1.4x faster oneDNN training on CPU; same values.
        w = _nhwc(w)
        ph, pw = self.padding
        if self.pad_value != 0.0 and (ph or pw):
            x = F.pad(x, (pw, pw, ph, ph), value=self.pad_value)
            padding = 0
        else:
            padding = self.padding
        x = _nhwc(x)
        return F.conv2d(x, w, None, self.stride, padding, self.dilation, self.groups)

    def _channel_view(self, s):
        return s.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pad_value={self.pad_value:g}"


class QuantLinear(QuantMixin, nn.Linear):
    """nn.Linear with quantized weights and inputs (forward: module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 weight_quantizer=None, input_quantizer=None, weight_clip="auto"):
        super().__init__(in_features, out_features, bias)
        self._init_quant(weight_quantizer, input_quantizer, weight_clip)

    def _op(self, x, w):
        return F.linear(x, w)

    def _channel_view(self, s):
        return s.reshape(1, -1)


def quant_layers(model: nn.Module):
    """``(name, layer)`` for every QuantConv2d / QuantLinear in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantMixin)]
