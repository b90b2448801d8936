"""Knowledge distillation for retraining a compressed model from its own float original.

``Distill(student, teacher)`` is an ``nn.Module`` that ``lowbit.train.loop.fit`` can train as
it is: its forward returns the student's logits and, in training mode, remembers the frozen
teacher's logits for the same batch; ``Distill.loss`` (pass it as ``fit(loss_fn=...)``) mixes
cross-entropy on the labels with the KL divergence to the teacher's softened distribution
(Hinton et al. 2015):  ``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``.

Only the student's parameters are registered, so the optimizer, ``post_step`` hooks (pruning
masks) and ``state_dict`` see the student alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Distill(nn.Module):
    def __init__(self, student: nn.Module, teacher: nn.Module, alpha: float = 0.7,
                 temperature: float = 4.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError(f"distillation: alpha must lie in [0, 1] and temperature > 0, "
                             f"got {alpha}, {temperature}")
        self.student = student
        object.__setattr__(self, "_teacher", teacher.eval())  # not a submodule: frozen
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.alpha, self.temperature = float(alpha), float(temperature)
        self._teacher_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self._teacher_logits = self._teacher(x)
        return self.student(x)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(out, y)
        t = self._teacher_logits
        if t is None or self.alpha == 0.0:
            return ce
        T = self.temperature
        kl = F.kl_div(F.log_softmax(out / T, dim=1), F.log_softmax(t / T, dim=1),
                      reduction="batchmean", log_target=True)
        return (1.0 - self.alpha) * ce + self.alpha * T * T * kl
