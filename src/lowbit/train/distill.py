"""Knowledge distillation from a trained teacher (Hinton, Vinyals & Dean 2015, "Distilling
the Knowledge in a Neural Network"), as binary networks use it (Real-to-Binary, Martinez et
al. 2020; ReActNet, Liu et al. 2020: a real-valued teacher's soft labels).

For logits ``s`` (student) and ``t`` (teacher), labels ``y``, weight ``a`` and temperature
``T``::

    loss = (1 - a) * CE(s, y)  +  a * T^2 * KL( softmax(t / T) || softmax(s / T) )

The ``T^2`` keeps the soft term's gradient on the scale of the hard one as ``T`` changes
(Hinton et al., section 2).  ``a = 1`` is ReActNet's distributional loss (soft labels only).

The teacher is any checkpoint of a model taking the same images (channels and size); it runs
in eval mode without gradients on the very batch the student sees (after augmentation).  When
its input normalisation differs from the student's, the batch is re-normalised per channel
(``x_t = (x * std_s + mean_s - mean_t) / std_t``), so teacher and student see the same pixels.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoint import load_model

__all__ = ["Teacher", "distillation_loss", "distill_config"]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      alpha: float, temperature: float,
                      hard: Callable = F.cross_entropy) -> torch.Tensor:
    """``(1 - alpha) * hard(student, labels) + alpha * T^2 * KL(p_teacher || p_student)``
    with ``p = softmax(logits / T)`` (module docstring); KL averaged over the batch."""
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    if alpha >= 1.0:
        return soft
    return (1.0 - alpha) * hard(student, labels) + alpha * soft


def distill_config(teacher, distill, temperature, default_temperature: float = 4.0) -> dict:
    """The config entries of a distillation run: ``teacher`` (path), ``distill`` (default 0.5)
    and ``temperature`` (default ``default_temperature``); none without a teacher, and a
    weight or temperature without one is an error."""
    if teacher is None:
        if distill is not None or temperature is not None:
            raise ValueError("distill / temperature: they weigh a teacher's soft targets; "
                             "give the teacher checkpoint too (--teacher)")
        return {}
    if distill is not None and not 0.0 < distill <= 1.0:
        raise ValueError(f"distill: expected a weight in (0, 1], got {distill!r}")
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    return {"teacher": str(teacher), "distill": 0.5 if distill is None else float(distill),
            "temperature": float(default_temperature if temperature is None else temperature)}


def _channels(values, n: int) -> torch.Tensor:
    v = values if isinstance(values, tuple) else (values,) * n
    return torch.tensor(v, dtype=torch.float32).view(1, n, 1, 1)


class Teacher:
    """A frozen model from a checkpoint that supplies soft targets (module docstring)."""

    def __init__(self, path: str | Path, normalization, input_shape: tuple[int, ...],
                 alpha: float = 0.5, temperature: float = 4.0,
                 device: str | torch.device = "cpu"):
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"distill: expected a weight in (0, 1], got {alpha!r}")
        if not float(temperature) > 0.0:
            raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.model, meta = load_model(path, device=device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        shape = tuple(meta.get("input_shape") or ())
        if shape and tuple(shape) != tuple(input_shape):
            raise ValueError(f"{path}: the teacher takes images of shape {shape} (C, H, W), "
                             f"the student's are {tuple(input_shape)}")
        self.affine = None
        tnorm = meta.get("normalization")
        if tnorm is not None and tnorm != normalization:
            c = int(input_shape[0])
            if tnorm.channels != c:
                raise ValueError(f"{path}: normalization: the teacher was trained on "
                                 f"{tnorm.channels}-channel images, the student's have {c}")
            s_mean, s_std = _channels(normalization.mean, c), _channels(normalization.std, c)
            t_mean, t_std = _channels(tnorm.mean, c), _channels(tnorm.std, c)
            # x_t = x * (std_s / std_t) + (mean_s - mean_t) / std_t  (scale: both 1/255)
            self.affine = ((s_std / t_std).to(device), ((s_mean - t_mean) / t_std).to(device))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for the student's normalised batch ``x``."""
        self.model.eval()
        if self.affine is not None:
            x = x * self.affine[0] + self.affine[1]
        return self.model(x)

    def loss(self, x: torch.Tensor, student: torch.Tensor, labels: torch.Tensor,
             hard: Callable = F.cross_entropy) -> torch.Tensor:
        """The distillation loss of the student's logits on batch ``x``."""
        return distillation_loss(student, self.logits(x), labels, self.alpha, self.temperature,
                                 hard)
