"""Optimizers and learning-rate schedules named in training settings.

Settings (recipe defaults in the registry, overridable per run) that matter here:

- ``optimizer``: ``"adam"`` (default), ``"adamw"``, ``"adamax"`` (the BNN paper's choice) or
  ``"sgd"`` (Nesterov momentum ``momentum``, default 0.9); ``weight_decay`` (default 0).
- ``schedule``: ``"cosine"`` (per-step cosine decay from ``lr`` to 0 over the run),
  ``"step"`` (``lr * lr_gamma ** (epoch // lr_step)``, defaults 0.1 and a third of the
  epochs), ``"exp"`` (the BNN paper's exponential decay, per step from ``lr`` to
  ``lr * lr_decay`` at the end of the run, default 0.01) or ``"constant"``.
- ``"shift_adamax"``: the BNN paper's shift-based AdaMax (``lowbit.train.shift``).

A schedule is a pure function of the global step, so it has no state to lose: the checkpoint
stores the schedule's settings and a resumed run recomputes the same learning rate.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

__all__ = ["OPTIMIZERS", "SCHEDULES", "make_optimizer", "make_schedule", "lr_at", "set_lr"]

OPTIMIZERS = ("adam", "adamw", "adamax", "shift_adamax", "sgd")
SCHEDULES = ("cosine", "step", "exp", "constant")


def make_optimizer(params: Iterable, config: dict) -> torch.optim.Optimizer:
    """Build the optimizer named by ``config["optimizer"]`` (or call it, if it is a callable
    ``f(params, config) -> Optimizer``)."""
    kind = config.get("optimizer", "adam")
    lr, wd = float(config["lr"]), float(config.get("weight_decay", 0.0))
    if callable(kind):
        return kind(params, config)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if kind == "adamax":
        return torch.optim.Adamax(params, lr=lr, weight_decay=wd)
    if kind == "shift_adamax":
        from .shift import ShiftAdaMax
        return ShiftAdaMax(params, lr=lr, weight_decay=wd)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(config.get("momentum", 0.9)),
                               nesterov=True, weight_decay=wd)
    raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {kind!r}")


def make_schedule(config: dict, steps_per_epoch: int) -> dict:
    """The schedule settings (plain data, stored in checkpoints) for ``lr_at``."""
    kind = config.get("schedule", "cosine")
    if kind not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {kind!r}")
    epochs = int(config["epochs"])
    return {
        "kind": kind,
        "lr": float(config["lr"]),
        "epochs": epochs,
        "steps_per_epoch": int(steps_per_epoch),
        "lr_step": int(config.get("lr_step") or max(1, epochs // 3)),
        "lr_gamma": float(config.get("lr_gamma", 0.1)),
        "lr_decay": float(config.get("lr_decay", 0.01)),
    }


def lr_at(schedule: dict, step: int) -> float:
    """Learning rate for global optimizer step ``step`` (0-based)."""
    lr, kind = schedule["lr"], schedule["kind"]
    if kind == "constant":
        return lr
    spe = schedule["steps_per_epoch"]
    if kind == "step":
        return lr * schedule["lr_gamma"] ** ((step // spe) // schedule["lr_step"])
    if kind == "exp":
        total = max(1, schedule["epochs"] * spe)
        return lr * schedule.get("lr_decay", 0.01) ** (min(step, total) / total)
    total = max(1, schedule["epochs"] * spe)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's lr to ``lr * group.get("lr_scale", 1)``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
