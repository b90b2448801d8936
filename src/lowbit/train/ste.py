"""Autograd functions with hand-written gradients: the maths of every quantizer in one place.

Each function is pure (no module state) and implements one formula of ../shared/SPEC.md
sections 1-4 exactly.  The ``nn.Module`` wrappers with ``bits`` and registry names live in
:mod:`lowbit.train.quantizers`.

Conventions shared with the runtime (exactness matters there):

- ``sign(x) = +1 if x >= 0 else -1`` -- zero maps to +1 (a NaN maps to -1; the runtime
  refuses NaN).
- ``round`` is ``torch.round``: round half to even, like ``numpy.round``.
- Outputs are float tensors of the input's dtype holding exactly the quantized values.
"""
from __future__ import annotations

import torch
from torch.autograd import Function

__all__ = ["SignSTE", "StochasticSignSTE", "RoundSTE", "ScaledSignSTE", "ReplaceSTE", "GradQuantize",
           "sign", "quantize_k", "channel_mean_abs"]


def sign(x: torch.Tensor) -> torch.Tensor:
    """Deterministic sign with sign(0) = +1: ``+1 if x >= 0 else -1`` (no gradient)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def channel_mean_abs(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``mean |w|`` over each output channel (dim 0), shaped to broadcast against ``w``;
    or over the whole tensor (a 0-d tensor) when ``per_channel`` is False."""
    if not per_channel:
        return w.abs().mean()
    return w.abs().reshape(w.shape[0], -1).mean(1).reshape((-1,) + (1,) * (w.dim() - 1))


class SignSTE(Function):
    """BNN deterministic binarization (Hubara, Courbariaux et al. 2016).

    forward:  x_b = sign(x) = +1 if x >= 0 else -1
    backward: g_x = g_b * 1{|x| <= clip}      (derivative of Htanh; clip = inf -> identity)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip = float(clip)
        return sign(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= ctx.clip).to(g.dtype), None


class StochasticSignSTE(Function):
    """BNN stochastic binarization: +1 with probability p = hard_sigmoid(x) = clip((x+1)/2, 0, 1),
    else -1 (a uniform draw u in [0, 1) gives +1 iff u < p).  Backward as :class:`SignSTE`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.clip = float(clip)
        p = ((x + 1) / 2).clamp(0, 1)
        return torch.where(torch.rand_like(x) < p, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= ctx.clip).to(g.dtype), None


class RoundSTE(Function):
    """``round(x)`` (half to even) forward, identity backward (the straight-through estimator
    DoReFa-Net uses inside quantize_k)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return g


def quantize_k(r: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa ``quantize_k(r) = round((2^k - 1) r) / (2^k - 1)`` for r in [0, 1], STE backward;
    the identity for k >= 32."""
    if k >= 32:
        return r
    n = float(2 ** k - 1)
    return RoundSTE.apply(r * n) / n


class ScaledSignSTE(Function):
    """XNOR-Net / BWN weight binarization W~ = alpha * sign(W) (Rastegari et al. 2016).

    forward:  alpha = ||W||_1 / n over each output filter (or the whole layer), W~ = alpha * B,
              B = sign(W), n = the number of weights alpha is the mean over.
    backward: dC/dW_i = dC/dW~_i * (1/n + 1{|W_i| <= clip} * alpha)    (SPEC section 2)
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, per_channel: bool = True, clip: float = 1.0):
        alpha = channel_mean_abs(w, per_channel)
        ctx.save_for_backward(w, alpha)
        ctx.clip = float(clip)
        ctx.n = w[0].numel() if per_channel else w.numel()
        return alpha * sign(w)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        w, alpha = ctx.saved_tensors
        mask = (w.abs() <= ctx.clip).to(g.dtype)
        return g * (1.0 / ctx.n + mask * alpha), None, None


class ReplaceSTE(Function):
    """Straight-through replacement: forward returns the (already quantized, detached) ``q``;
    backward passes ``g * 1{|w| <= clip}`` to ``w`` (clip = inf: the plain identity STE that
    TWN and DoReFa's k = 1 weights use)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor, clip: float = float("inf")):
        ctx.save_for_backward(w)
        ctx.clip = float(clip)
        return q.detach().clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (w,) = ctx.saved_tensors
        if ctx.clip == float("inf"):
            return g, None, None
        return g * (w.abs() <= ctx.clip).to(g.dtype), None, None


class GradQuantize(Function):
    """DoReFa-Net gradient quantization: identity forward; backward (Zhou et al. 2016)

        g_q = 2 max|dr| * (quantize_k(dr / (2 max|dr|) + 1/2 + N(k)) - 1/2),
        N(k) = sigma / (2^k - 1),  sigma ~ Uniform(-0.5, 0.5)

    ``max|dr|`` is taken per sample (over every axis but the batch axis, as in the paper) when
    ``per_sample`` is True, else over the whole tensor.  The rounded level is clamped to
    [0, 2^k - 1] (only float round-off at the range ends can leave it).  Stochastic rounding makes
    g_q unbiased: E[g_q] = dr.  The identity for k >= 32.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int = 32, per_sample: bool = True) -> torch.Tensor:
        ctx.k, ctx.per_sample = int(k), bool(per_sample)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        k = ctx.k
        if k >= 32:
            return g, None, None
        if ctx.per_sample and g.dim() > 1:
            m = g.abs().reshape(g.shape[0], -1).amax(1).reshape((-1,) + (1,) * (g.dim() - 1))
        else:
            m = g.abs().amax()
        nonzero = m > 0                                 # an all-zero gradient stays zero
        m = torch.where(nonzero, m, torch.ones_like(m))
        n = float(2 ** k - 1)
        noise = (torch.rand_like(g) - 0.5) / n
        level = torch.round((g / (2 * m) + 0.5 + noise) * n).clamp_(0, n)
        return 2 * m * (level / n - 0.5) * nonzero.to(g.dtype), None, None
