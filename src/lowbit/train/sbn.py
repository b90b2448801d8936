"""Shift-based BatchNorm (BNN paper, Hubara et al. 2016, Algorithm 3).

AP2(x) = sign(x) * 2^round(log2|x|) is the approximate power of 2 (AP2(0) = 0), and a
product with an AP2 value is a binary shift (``<<>>`` in the paper).  Training forward,
per channel over the mini-batch (the paper's Algorithm 3)::

    mu      = mean(x)                                   mini-batch mean
    C(x)    = x - mu                                    centred input
    var     = mean(C(x) <<>> AP2(C(x)))                 approximate variance (C * AP2(C) ~ C^2)
    x_hat   = C(x) <<>> AP2(1 / sqrt(var + eps))        normalise
    y       = AP2(gamma) <<>> x_hat + beta              scale and shift

(the paper lists beta among the learned parameters and calls the last line "scale and shift",
but its pseudo-code line omits "+ beta"; we add it, as every BN does).  Backward: AP2 is a
straight-through estimator (identity gradient), so gamma, the variance and C(x) get the
gradients of the un-rounded values.  Running statistics follow torch's BatchNorm (momentum,
running_var the *unbiased* approximate variance).

Inference: ``y = AP2(gamma) * AP2(1 / sqrt(running_var + eps)) * (x - running_mean) + beta``,
i.e. an ordinary affine BatchNorm whose scale ``s`` is a product of two powers of two (itself
a power of two, or 0).  The eval forward is *literally* torch's BatchNorm with weight ``s``,
bias beta, mean running_mean, var ``1 - EXPORT_EPS`` and eps ``EXPORT_EPS`` (a power of two):
var + eps = 1 exactly, so torch's invstd is exactly 1 and its per-channel factor exactly ``s``.
The exporter (``lowbit.train.fxops``) writes that very BatchNorm as the graph's ``batchnorm``
op, so the runtime computes the same float32 values, and the sign(BN) fold of
``lowbit.codec.rewrite`` turns it into the same exact integer thresholds as an ordinary BN
(ties included).  Because ``s`` is a power of two, ``x * s`` is exact and
``(x - mean) * s + beta`` has a single rounding: the BN really is a shift and an add.

``ShiftBatchNorm1d`` / ``ShiftBatchNorm2d`` have the state-dict keys of torch's BatchNorm
(weight, bias, running_mean, running_var, num_batches_tracked).  ``make_bn(kind)`` is the
recipes' ``bn=`` switch: ``"batch"`` (torch BatchNorm, the default), ``"shift"`` (SBN in every
BN position, the paper's) or ``"shift-hidden"`` (SBN in every hidden BN -- those followed by a
sign -- and an ordinary BatchNorm on the output logits, whose scale is then a float multiply,
``num_classes`` of them per image; first and last layers at higher precision, as usual).
``make_output_bn(kind)`` is the factory of that output BN.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["ap2", "ap2_ste", "ShiftBatchNorm", "ShiftBatchNorm1d", "ShiftBatchNorm2d",
           "make_bn", "make_output_bn", "BN_KINDS", "EXPORT_EPS"]

EXPORT_EPS = 2.0 ** -10          # the inference BN's eps; its var is 1 - EXPORT_EPS (exact)
BN_KINDS = ("batch", "shift", "shift-hidden")
SQRT_HALF = 0.7071067811865476   # float64 sqrt(1/2): no float32 lies between it and the real one


def ap2(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * 2^round(log2|x|) elementwise, 0 for 0.  Exact: with |x| = m * 2^e (frexp,
    m in [0.5, 1)), round(log2|x|) = e if m >= sqrt(1/2) else e - 1 (log2|x| is never exactly
    halfway for a float32 x, sqrt(2) being irrational), and the power of two is built from its
    float32 exponent bits; the exponent is clamped to float32's normal range [-126, 127]."""
    xf = x.detach().float()
    mag = xf.abs()
    m, e = torch.frexp(mag)
    k = e.to(torch.int64) - (m.double() < SQRT_HALF).to(torch.int64)
    k = torch.where(torch.isinf(mag), 127, k).clamp(-126, 127).to(torch.int32)
    p = ((k + 127) << 23).view(torch.float32)
    out = torch.where(mag > 0, torch.sign(xf) * p, torch.zeros_like(xf))
    return out.to(x.dtype)


class _AP2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return ap2(x)

    @staticmethod
    def backward(ctx, g):
        return g


def ap2_ste(x: torch.Tensor) -> torch.Tensor:
    """AP2 forward, identity gradient (straight-through)."""
    return _AP2.apply(x)


class ShiftBatchNorm(_BatchNorm):
    """Shift-based BatchNorm (module docstring); affine and running statistics required."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps, momentum, affine=True, track_running_stats=True)

    def inference_scale(self) -> torch.Tensor:
        """Per-channel float32 ``AP2(gamma) * AP2(1/sqrt(running_var + eps))``: a power of two
        (or 0) -- the weight of the equivalent ordinary BatchNorm."""
        with torch.no_grad():
            invstd = torch.rsqrt(self.running_var.float() + self.eps)
            return (ap2(self.weight.float()) * ap2(invstd)).to(self.weight.dtype)

    def _inference_scale_np(self):
        import numpy as np
        g = self.weight.detach().cpu().numpy().astype(np.float32)
        v = self.running_var.detach().cpu().numpy().astype(np.float32)
        inv = (np.float32(1) / np.sqrt(v + np.float32(self.eps))).astype(np.float32)

        def ap2_np(a):
            m, e = np.frexp(np.abs(a))
            k = np.clip(e.astype(np.int64) - (m.astype(np.float64) < SQRT_HALF), -126, 127)
            return np.where(a != 0, np.sign(a) * np.ldexp(np.float32(1), k), 0).astype(np.float32)
        return (ap2_np(g) * ap2_np(inv)).astype(np.float32)

    def unit_var(self) -> torch.Tensor:
        """The equivalent BatchNorm's running variance: 1 - EXPORT_EPS in every channel."""
        return torch.full_like(self.running_var, 1.0 - EXPORT_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
                # tracers (the ONNX baselines) cannot follow AP2's bit tricks: the same values,
                # computed in numpy, as a constant
                scale = torch.from_numpy(self._inference_scale_np()).to(self.weight.device)
            else:
                scale = self.inference_scale()
            return F.batch_norm(x, self.running_mean, self.unit_var(), scale,
                                self.bias, False, 0.0, EXPORT_EPS)
        dims = [0] + list(range(2, x.dim()))
        view = (1, -1) + (1,) * (x.dim() - 2)
        mu = x.mean(dims)
        c = x - mu.reshape(view)
        var = (c * ap2_ste(c)).mean(dims)                       # approximate variance
        invstd = ap2_ste(torch.rsqrt(var + self.eps))
        y = (c * invstd.reshape(view)) * ap2_ste(self.weight).reshape(view) \
            + self.bias.reshape(view)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None \
                else 1.0 / float(self.num_batches_tracked)
            n = x.numel() // x.shape[1]
            self.running_mean.mul_(1 - m).add_(mu.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(1, n - 1)), alpha=m)
        return y


class ShiftBatchNorm1d(ShiftBatchNorm):
    """Shift-based BatchNorm of (N, C) or (N, C, L) input."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class ShiftBatchNorm2d(ShiftBatchNorm):
    """Shift-based BatchNorm of (N, C, H, W) input."""

    def _check_input_dim(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")


def make_bn(kind: str) -> tuple[Callable[[int], nn.Module], Callable[[int], nn.Module]]:
    """``(bn1d, bn2d)`` factories of the hidden BNs for a recipe's ``bn=`` argument:
    ``"batch"`` (torch BatchNorm1d / 2d), ``"shift"`` or ``"shift-hidden"``
    (ShiftBatchNorm1d / 2d).  A net without an output BN (Bi-Real: a float linear head) builds
    the same model for ``"shift"`` and ``"shift-hidden"``."""
    if kind == "batch":
        return nn.BatchNorm1d, nn.BatchNorm2d
    if kind in ("shift", "shift-hidden"):
        return ShiftBatchNorm1d, ShiftBatchNorm2d
    raise ValueError(f"bn: expected one of {', '.join(BN_KINDS)}, got {kind!r}")


def make_output_bn(kind: str) -> Callable[[int], nn.Module]:
    """Factory of the BN on the output logits (not followed by a sign): ShiftBatchNorm1d for
    ``"shift"`` (the paper: SBN everywhere), torch BatchNorm1d for ``"batch"`` and
    ``"shift-hidden"`` (y = gamma * (x - mean) / sqrt(var + eps) + beta, float scale)."""
    bn1d, _ = make_bn(kind)
    return bn1d if kind == "shift" else nn.BatchNorm1d
