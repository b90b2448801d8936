"""Dense-Sparse-Dense training inside one ``fit`` run (``lowbit train --dsd SPARSITY``).

DSD (Han, Pool, Narang et al., ICLR 2017): train dense, prune the smallest weights and retrain
the sparse network, then drop the masks and retrain everything (the pruned weights restart at
zero).  Here the three phases share one run of ``lowbit.train.loop.fit`` and its learning-rate
schedule: epochs ``[0, e1)`` dense, ``[e1, e2)`` sparse, ``[e2, epochs)`` dense again, with
``e1 = round(epochs * dense)`` and ``e2 = round(epochs * (dense + sparse))`` (default thirds).
With the recipes' decaying schedules (cosine, exp) the re-dense phase runs at the lowest
learning rates, as the paper's re-dense step at a lower rate does.

Mechanics: a :class:`DSDSchedule` module is attached to the model for the run (no parameters or
buffers, so the state dict and checkpoints are those of the plain model); its ``post_step``
re-applies the masks after every optimizer step (``fit`` collects ``post_step`` methods once,
before the masks exist), and :meth:`DSDSchedule.on_epoch_end` prunes after epoch ``e1`` and
drops the masks after epoch ``e2``.  Pruning is magnitude pruning to the target sparsity per
layer (``lowbit.train.prune``); layers are the float layers with a rank >= 2 weight (binary /
quantized weights are skipped: zeroing a latent binary weight does not remove it).  A run
resumed inside the sparse phase re-derives its masks by pruning the checkpoint's weights to the
same sparsity (the pruned ones are exactly zero, so the same weights are chosen).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from . import prune

__all__ = ["DSDSchedule", "dsd_layers", "phases", "targets_of", "attach", "detach", "prepare"]


def dsd_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Prunable float layers: rank >= 2 weight and no weight quantizer."""
    return {n: m for n, m in prune.layers(model).items()
            if getattr(m, "weight_quantizer", None) is None and not isinstance(m, DSDSchedule)}


def phases(epochs: int, dense: float = 1 / 3, sparse: float = 1 / 3) -> tuple[int, int]:
    """``(e1, e2)``: the sparse phase is epochs ``[e1, e2)``; each phase gets >= 1 epoch."""
    epochs = int(epochs)
    if epochs < 3:
        raise ValueError(f"--dsd needs at least 3 epochs (dense, sparse, dense), got {epochs}")
    if not (0 < dense < 1 and 0 < sparse < 1 and dense + sparse < 1):
        raise ValueError(f"dsd phases: expected 0 < dense, sparse and dense + sparse < 1, got "
                         f"{dense}, {sparse}")
    e1 = min(max(1, round(epochs * dense)), epochs - 2)
    e2 = min(max(e1 + 1, round(epochs * (dense + sparse))), epochs - 1)
    return e1, e2


class DSDSchedule(nn.Module):
    """The DSD phases of one run (module docstring).  ``targets``: layer name -> sparsity."""

    def __init__(self, model: nn.Module, targets: Mapping[str, Any], epochs: int,
                 dense: float = 1 / 3, sparse: float = 1 / 3):
        super().__init__()
        found = dsd_layers(model)
        unknown = sorted(set(targets) - set(found))
        if unknown:
            raise ValueError(f"--dsd: layer(s) {unknown} are not prunable float layers; "
                             f"layers: {', '.join(found) or 'none'}")
        for n, t in targets.items():
            if "sparsity" not in prune.parse_target(t):
                raise ValueError(f"--dsd: layer {n}: expected a sparsity in [0, 1], got {t!r}")
        self._model = [model]                     # a list: not a submodule
        self._layers = {n: found[n] for n in targets}
        self.targets = {n: float(t) for n, t in targets.items()}
        self.e1, self.e2 = phases(epochs, dense, sparse)
        self.achieved: dict[str, float] = {}

    def phase(self, epoch: int) -> str:
        """'dense', 'sparse' or 'redense' for epoch index ``epoch`` (0-based)."""
        return "dense" if epoch < self.e1 else "sparse" if epoch < self.e2 else "redense"

    def prune_now(self) -> dict[str, float]:
        self.achieved = prune.prune(self._model[0], self.targets)
        return self.achieved

    def release(self) -> None:
        for m in self._layers.values():
            prune.remove_mask(m)

    def start(self, done_epochs: int) -> None:
        """Set the masks for a run that continues after ``done_epochs`` epochs."""
        if self.e1 <= done_epochs < self.e2:
            self.prune_now()

    def post_step(self) -> None:
        for m in self._layers.values():
            mask = getattr(m, "weight_mask", None)
            if mask is not None:
                m.weight.mul_(mask)

    def on_epoch_end(self, rec: dict) -> None:
        epoch = int(rec["epoch"])                 # 1-based: epochs done
        if epoch == self.e1:
            self.prune_now()
        elif epoch == self.e2:
            self.release()

    def summary(self, epochs: int) -> dict:
        return {"sparsity": self.targets, "achieved_sparse_phase": self.achieved,
                "phases": {"dense": [1, self.e1], "sparse": [self.e1 + 1, self.e2],
                           "redense": [self.e2 + 1, int(epochs)]}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        return x


def targets_of(model: nn.Module, spec: str) -> dict[str, float]:
    """``--dsd`` value -> layer sparsities: ``0.5`` (every float layer) or a layer spec as
    ``lowbit compress --prune`` takes (``fc1=0.6,conv=0.3,*=0.5``; name beats kind beats *)."""
    from .compress import resolve
    found = dsd_layers(model)
    if not found:
        raise ValueError("--dsd: the model has no float layer to prune (binary / quantized "
                         "weights are not pruned)")
    out = {}
    for n, v in resolve(str(spec), found, "--dsd").items():
        try:
            s = float(v)
        except ValueError:
            s = -1.0
        if not 0.0 <= s < 1.0:
            raise ValueError(f"--dsd: layer {n}: expected a sparsity in [0, 1), got {v!r}")
        out[n] = s
    return out


def attach(model: nn.Module, spec: str, epochs: int, done_epochs: int = 0) -> DSDSchedule:
    """Attach a schedule for ``spec`` (see :func:`targets_of`) to ``model`` and set the masks
    of a run resumed after ``done_epochs``; pass ``sched.on_epoch_end`` to ``fit``."""
    sched = DSDSchedule(model, targets_of(model, spec), epochs)
    model.add_module("_dsd_schedule", sched)
    sched.start(done_epochs)
    return sched


def prepare(name: str, kwargs: dict, spec: str, epochs: int | None, seed: int | None,
            checkpoint=None) -> tuple[nn.Module, DSDSchedule, int]:
    """For ``lowbit train --dsd``: the model built as ``fit`` builds it (seeded with ``seed``,
    so the dense phase starts from the same weights as a plain run), or, for a resumed run,
    rebuilt with the weights of ``checkpoint``; with the schedule attached.  Returns
    ``(model, schedule, epochs)`` (``epochs`` None: the checkpoint's, else the recipe's)."""
    from . import registry
    from .checkpoint import build_model, load_checkpoint
    from .loop import DEFAULTS, seed_everything
    done = 0
    if checkpoint is not None:
        ck = load_checkpoint(checkpoint)
        epochs = int(epochs or ck["config"]["epochs"])
        model = build_model(name, **kwargs)
        model.load_state_dict(ck["model_state"])
        done = int(ck["epoch"])
    else:
        seed_everything(0 if seed is None else int(seed))
        model = build_model(name, **kwargs)
        epochs = int(epochs or {**DEFAULTS, **registry.get(name).defaults}["epochs"])
    return model, attach(model, spec, epochs, done), epochs


def detach(model: nn.Module) -> None:
    """Remove the schedule (and any masks left) after the run."""
    sched = getattr(model, "_dsd_schedule", None)
    if sched is not None:
        sched.release()
        del model._dsd_schedule
