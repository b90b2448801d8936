"""Quantizers in the larq idiom: small ``nn.Module`` classes with ``bits`` and a registry name.

``get("ste_sign")`` builds one by name (``get(name, **kwargs)``; an instance passes through,
``None`` means float).  Each class wraps a pure autograd function of :mod:`lowbit.train.ste`.

Every layer quantizer also offers ``split(x) -> (levels, scale)`` with ``forward(x) == levels *
scale`` (``scale`` None means 1): ``levels`` are small integers whenever ``integer_levels`` is
True, so that a layer can compute its accumulator exactly in integers (what the XNOR-popcount
runtime does) and apply the float scale afterwards.  See :mod:`lowbit.train.layers`.

=================  ====  ==============================================================
name               bits  forward (SPEC ../shared/SPEC.md sections 1-4)
=================  ====  ==============================================================
ste_sign           1     sign(x), sign(0)=+1; backward g*1{|x|<=clip}              (BNN)
stochastic_sign    1     +1 w.p. clip((x+1)/2,0,1) in training; sign(x) in eval    (BNN)
xnor_sign          1     sign(x); the layer multiplies its output by K             (XNOR)
bwn                1     alpha*sign(W), alpha = mean|W| per output channel  (BWN / XNOR)
ternary            2     alpha*t, t in {-1,0,1}, Delta = 0.7 mean|W|                (TWN)
ternary5           3     alpha*l, l in {-2,-1,0,1,2}, thresholds Delta, 3*Delta (article)
dorefa_weight      k     k=1: E|W|*sign(W); k>1: 2*quantize_k(tanh/2max|tanh| + 1/2) - 1
dorefa_act         k     quantize_k(clip(a, 0, 1))
dorefa_grad        k     identity forward, k-bit noisy gradient backward (a module)
uint8              8     the 0..255 pixel of a normalised input (BNN Algorithm 4 input)
=================  ====  ==============================================================
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ste import (GradQuantize, ReplaceSTE, RoundSTE, ScaledSignSTE, SignSTE, StochasticSignSTE,
                  channel_mean_abs, quantize_k, sign)

__all__ = ["Quantizer", "SteSign", "StochasticSign", "XnorSign", "BinaryWeight", "Ternary",
           "FiveLevel", "DorefaWeight", "DorefaActivation", "DorefaGrad", "Uint8Input",
           "get", "names", "register_quantizer", "ternary_levels", "five_levels"]

_QUANTIZERS: dict[str, type] = {}
INF = float("inf")


def register_quantizer(cls: type) -> type:
    if cls.name in _QUANTIZERS:
        raise ValueError(f"quantizer {cls.name!r} is registered twice")
    _QUANTIZERS[cls.name] = cls
    return cls


def get(spec, **kwargs):
    """``None`` -> None (float), a name -> a new quantizer, a module -> itself."""
    if spec is None or isinstance(spec, nn.Module):
        return spec
    if spec not in _QUANTIZERS:
        raise KeyError(f"unknown quantizer {spec!r}; known: {', '.join(sorted(_QUANTIZERS))}")
    return _QUANTIZERS[spec](**kwargs)


def names() -> list[str]:
    return sorted(_QUANTIZERS)


def _sum_per(x: torch.Tensor, per_channel: bool) -> torch.Tensor:
    if not per_channel:
        return x.sum()
    return x.reshape(x.shape[0], -1).sum(1).reshape((-1,) + (1,) * (x.dim() - 1))


class Quantizer(nn.Module):
    """Base: ``bits``, ``name``; ``latent_clip`` (clip latent weights to [-c, c] after each
    optimizer step when used as a weight quantizer; None = no clipping);
    ``integer_levels`` (``split`` gives integer levels)."""

    name = "identity"
    bits = 32
    latent_clip: float | None = None
    integer_levels = False

    def split(self, x: torch.Tensor):
        q = self(x)
        return q, None

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@register_quantizer
class SteSign(Quantizer):
    """BNN deterministic sign (Hubara et al. 2016): sign(x), sign(0)=+1;
    backward g*1{|x|<=clip}.  As a weight quantizer the layer clips latent weights to
    [-clip, clip] after every step."""

    name, bits, integer_levels = "ste_sign", 1, True

    def __init__(self, clip: float = 1.0):
        super().__init__()
        self.clip = float(clip)
        self.latent_clip = self.clip

    def forward(self, x):
        return SignSTE.apply(x, self.clip)

    def split(self, x):
        return sign(x), None


@register_quantizer
class StochasticSign(SteSign):
    """BNN stochastic sign: +1 with probability hard_sigmoid(x) = clip((x+1)/2, 0, 1) while
    training; deterministic sign(x) in eval mode (so evaluation is reproducible)."""

    name = "stochastic_sign"

    def forward(self, x):
        if self.training:
            return StochasticSignSTE.apply(x, self.clip)
        return SignSTE.apply(x, self.clip)


@register_quantizer
class XnorSign(SteSign):
    """XNOR-Net input binarization (Rastegari et al. 2016): H = sign(I) (STE, no latent clip),
    plus the scale the layer multiplies its output by:
    conv: K = box_filter(A), A = mean_c |I| (N,1,H,W), box = avg_pool2d with the conv's kernel
    size, stride and padding (zero padding counted, i.e. A convolved with k = 1/(w h));
    linear: K = mean_j |I_j| per sample (N, 1)."""

    name = "xnor_sign"

    def __init__(self, clip: float = 1.0):
        super().__init__(clip)
        self.latent_clip = None

    def scale(self, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        if x.dim() == 2:
            return x.abs().mean(1, keepdim=True)
        if tuple(layer.dilation) != (1, 1):
            raise ValueError("xnor_sign: K is defined for dilation 1 only")
        a = x.abs().mean(1, keepdim=True)
        return F.avg_pool2d(a, layer.kernel_size, layer.stride, layer.padding,
                            ceil_mode=False, count_include_pad=True)


@register_quantizer
class BinaryWeight(Quantizer):
    """BWN / XNOR-Net weights: W~ = alpha * sign(W), alpha = ||W||_1 / n per output channel
    (per layer if ``per_channel`` is False); backward dC/dW = dC/dW~ * (1/n + 1{|W|<=clip} alpha)
    (Rastegari et al. 2016, SPEC section 2)."""

    name, bits, integer_levels = "bwn", 1, True

    def __init__(self, per_channel: bool = True, clip: float = 1.0):
        super().__init__()
        self.per_channel, self.clip = bool(per_channel), float(clip)

    def forward(self, w):
        return ScaledSignSTE.apply(w, self.per_channel, self.clip)

    def split(self, w):
        return sign(w), channel_mean_abs(w, self.per_channel).detach()


def ternary_levels(w: torch.Tensor, per_channel: bool = False, factor: float = 0.7):
    """TWN (Li et al. 2016): Delta = factor * mean|W|; t = sign(W) * 1{|W| > Delta};
    alpha = mean(|W_i| for |W_i| > Delta) (0 if none).  Returns (t, alpha)."""
    delta = factor * channel_mean_abs(w, per_channel)
    mask = (w.abs() > delta).to(w.dtype)
    alpha = _sum_per(w.abs() * mask, per_channel) / _sum_per(mask, per_channel).clamp_min(1)
    return sign(w) * mask, alpha


def five_levels(w: torch.Tensor, per_channel: bool = False, factor: float = 0.7):
    """Five levels {-2,-1,0,1,2} * alpha (the source article's extension of TWN), our thresholds:
    Delta1 = factor * mean|W| (TWN's zero threshold, about alpha/2), Delta2 = 3 * Delta1 (about
    1.5 alpha, the midpoint between levels 1 and 2); l = 1{|W|>Delta1} + 1{|W|>Delta2};
    alpha = sum(l |W|) / sum(l^2), the L2-optimal scale for these levels (equal to TWN's alpha
    when no weight exceeds Delta2).  Returns (sign(W) * l, alpha)."""
    d1 = factor * channel_mean_abs(w, per_channel)
    a = w.abs()
    lev = (a > d1).to(w.dtype) + (a > 3 * d1).to(w.dtype)
    alpha = _sum_per(lev * a, per_channel) / _sum_per(lev * lev, per_channel).clamp_min(1)
    return sign(w) * lev, alpha


@register_quantizer
class Ternary(Quantizer):
    """TWN weights alpha * t, t in {-1, 0, +1} (:func:`ternary_levels`); per layer by default
    (the paper), per output channel with ``per_channel=True``.  Straight-through backward
    (identity, or g*1{|W|<=clip}); Delta and alpha carry no gradient."""

    name, bits, integer_levels = "ternary", 2, True
    _levels = staticmethod(ternary_levels)

    def __init__(self, per_channel: bool = False, factor: float = 0.7, clip: float = INF):
        super().__init__()
        self.per_channel, self.factor, self.clip = bool(per_channel), float(factor), float(clip)

    def split(self, w):
        t, alpha = self._levels(w.detach(), self.per_channel, self.factor)
        return t, alpha

    def forward(self, w):
        t, alpha = self.split(w)
        return ReplaceSTE.apply(w, alpha * t, self.clip)


@register_quantizer
class FiveLevel(Ternary):
    """Five-level weights {-2,-1,0,1,2} * alpha (:func:`five_levels`); 3 bits; otherwise as
    :class:`Ternary`."""

    name, bits = "ternary5", 3
    _levels = staticmethod(five_levels)


@register_quantizer
class DorefaWeight(Quantizer):
    """DoReFa-Net weights (Zhou et al. 2016).  k = 1: w_q = E(|w|) * sign(w) (E over the layer,
    no gradient; identity STE);  k > 1: w_q = 2 * quantize_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1
    (gradient through tanh and max, STE through round);  k >= 32: w."""

    name = "dorefa_weight"

    def __init__(self, bits: int = 1):
        super().__init__()
        self.bits = int(bits)
        self.integer_levels = self.bits < 32

    def _level(self, w):  # i in 0..2^k-1 with w_q = 2 i / (2^k - 1) - 1
        t = torch.tanh(w)
        return RoundSTE.apply((t / (2 * t.abs().max()) + 0.5) * (2 ** self.bits - 1))

    def forward(self, w):
        if self.bits >= 32:
            return w
        if self.bits == 1:
            e = w.detach().abs().mean()
            return ReplaceSTE.apply(w, e * sign(w.detach()), INF)
        return 2 * quantize_k(torch.tanh(w) / (2 * torch.tanh(w).abs().max()) + 0.5, self.bits) - 1

    def split(self, w):
        w = w.detach()
        if self.bits >= 32:
            return w, None
        if self.bits == 1:
            return sign(w), w.abs().mean()
        n = 2 ** self.bits - 1
        return 2 * self._level(w) - n, torch.tensor(1.0 / n, dtype=w.dtype)


@register_quantizer
class DorefaActivation(Quantizer):
    """DoReFa-Net activations a_q = quantize_k(clip(a, 0, 1)) (clip only when k >= 32)."""

    name = "dorefa_act"

    def __init__(self, bits: int = 2):
        super().__init__()
        self.bits = int(bits)
        self.integer_levels = self.bits < 32

    def forward(self, x):
        return quantize_k(x.clamp(0, 1), self.bits)

    def split(self, x):
        if self.bits >= 32:
            return x.clamp(0, 1), None
        n = 2 ** self.bits - 1
        return torch.round(x.clamp(0, 1) * n), torch.tensor(1.0 / n, dtype=x.dtype)


@register_quantizer
class DorefaGrad(Quantizer):
    """DoReFa-Net gradient quantizer, a module placed after a layer: identity forward, k-bit
    stochastic gradient backward (:class:`lowbit.train.ste.GradQuantize`); identity at 32."""

    name = "dorefa_grad"

    def __init__(self, bits: int = 32, per_sample: bool = True):
        super().__init__()
        self.bits, self.per_sample = int(bits), bool(per_sample)

    def forward(self, x):
        if self.bits >= 32 or not torch.is_grad_enabled():
            return x
        return GradQuantize.apply(x, self.bits, self.per_sample)


# Fashion-MNIST training-set statistics of u8/255 (lowbit.data.Normalization.from_images).
FMNIST_MEAN, FMNIST_STD = 0.28604059698879, 0.35302424451492


@register_quantizer
class Uint8Input(Quantizer):
    """The 8-bit pixel behind a normalised input: u8 = clamp(round(255 (x std + mean)), 0, 255).

    BNN Algorithm 4 computes the first layer as a_1 = sum_{n=1..8} 2^(n-1) (a_0^n . W_b) over the
    bit-planes a_0^n in {0,1} of the 8-bit input; that sum equals u8 . W_b, so in training the
    bit-plane layer *is* a binary-weight conv/linear on the integers 0..255 (zero padding = pixel
    value 0 = all bit-planes 0).  ``mean``/``std`` must be the run's input normalisation
    (buffers, saved in the checkpoint); a mismatch of up to ~1e-3 still rounds to the same u8."""

    name, bits, integer_levels = "uint8", 8, True

    def __init__(self, mean: float = FMNIST_MEAN, std: float = FMNIST_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x):
        return torch.round((x.detach() * self.std + self.mean) * 255.0).clamp_(0, 255)

    def split(self, x):
        return self(x), None

    def extra_repr(self) -> str:
        return f"bits=8, mean={self.mean.item():.6f}, std={self.std.item():.6f}"


def _check() -> None:  # the table in the module docstring lists every registered name
    assert all(n in __doc__ for n in _QUANTIZERS), "document every quantizer"


_check()
