"""Shift-based AdaMax from the BNN paper (Hubara, Courbariaux et al. 2016, Algorithm 3).

AP2(z) = sign(z) * 2^round(log2 |z|) is the nearest power of two, so multiplying by it is a
bit shift.  The update replaces AdaMax's multiplications by the learning rate and by 1/v with
shifts:

    m_t = beta1 m_{t-1} + (1 - beta1) g_t
    v_t = max(beta2 v_{t-1}, |g_t|)
    theta_t = theta_{t-1} - AP2(lr / (1 - beta1^t)) * (m_t * AP2(1 / (v_t + eps)))
"""
from __future__ import annotations

import torch

__all__ = ["ap2", "ShiftAdaMax"]


def ap2(z: torch.Tensor) -> torch.Tensor:
    """Nearest power of two with the sign of ``z`` (0 stays 0)."""
    mag = torch.exp2(torch.round(torch.log2(z.abs().clamp_min(torch.finfo(z.dtype).tiny))))
    return torch.where(z == 0, torch.zeros_like(z), torch.sign(z) * mag)


class ShiftAdaMax(torch.optim.Optimizer):
    """AdaMax whose scalings are powers of two (see the module docstring)."""

    def __init__(self, params, lr: float = 2e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr: expected > 0, got {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                st["step"] += 1
                m, v = st["m"], st["v"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                torch.maximum(v.mul_(b2), g.abs(), out=v)
                lr_t = group["lr"] / (1 - b1 ** st["step"])
                step_size = float(ap2(torch.tensor(lr_t, dtype=torch.float64)))
                p.sub_(m * ap2(1.0 / (v + group["eps"])), alpha=step_size)
        return loss
