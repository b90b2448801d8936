"""Magnitude pruning with masks that hold (Deep Compression; DSD).

A pruned layer keeps a boolean ``weight_mask`` (a non-persistent buffer: checkpoints stay
loadable by the plain model, since the zeros are in the weights).  Two things keep the pruned
weights at exactly zero whatever the optimizer does:

1. a gradient hook multiplies ``weight.grad`` by the mask, so pruned weights get no gradient
   (and Adam / momentum statistics that start at zero stay zero);
2. ``post_step()``, which ``lowbit.train.loop.fit`` calls after every optimizer step,
   re-applies the mask, so optimizer state from before pruning (Adam moments, momentum),
   weight decay variants or anything else cannot revive them.

Layers are the modules with a ``weight`` of rank >= 2 (``nn.Linear``, ``nn.Conv2d``), named as
in ``model.named_modules()``.  Thresholds: a target sparsity (fraction of the layer's weights
set to zero) or ``q * std`` of the layer's currently surviving weights.  Masks only shrink:
re-pruning never revives a weight.
"""
from __future__ import annotations

import types
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn


def layers(model: nn.Module) -> dict[str, nn.Module]:
    """The prunable layers: name -> module with a rank >= 2 ``weight`` parameter."""
    out = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2 and name:
            out[name] = m
    return out


def threshold_mask(w: torch.Tensor, *, sparsity: float | None = None, q: float | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean keep-mask of ``w``: the largest-magnitude weights survive.

    Exactly one of ``sparsity`` (fraction of ALL weights of the layer to be zero, counting
    those already pruned by ``mask``) or ``q`` (drop ``|w| < q * std`` of the surviving
    weights).  The result is always a subset of ``mask``.
    """
    if (sparsity is None) == (q is None):
        raise ValueError("give exactly one of sparsity= or q=")
    a = w.detach().abs()
    keep = torch.ones_like(a, dtype=torch.bool) if mask is None else mask.bool().clone()
    if sparsity is not None:
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity must lie in [0, 1], got {sparsity}")
        n_keep = int(round((1.0 - sparsity) * a.numel()))
        n_keep = min(n_keep, int(keep.sum()))
        scores = torch.where(keep, a, torch.full_like(a, -1.0)).reshape(-1)
        new = torch.zeros(a.numel(), dtype=torch.bool, device=a.device)
        if n_keep > 0:
            new[torch.topk(scores, n_keep, sorted=False).indices] = True
        return new.reshape(a.shape) & keep
    surviving = w.detach()[keep]
    thr = float(q) * float(surviving.std()) if surviving.numel() > 1 else 0.0
    return keep & (a >= thr)


def _post_step(self: nn.Module) -> None:
    with torch.no_grad():
        self.weight.mul_(self.weight_mask)
    prev = self._lowbit_prune.get("prev_post_step")
    if prev is not None:
        prev()


def apply_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Prune ``module.weight`` to ``mask`` (True = keep) and keep it pruned (see module doc)."""
    w = module.weight
    if mask.shape != w.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(w.shape)}")
    mask = mask.to(device=w.device, dtype=torch.bool)
    state = getattr(module, "_lowbit_prune", None)
    if state is None:
        prev = getattr(module, "post_step", None)
        module.register_buffer("weight_mask", mask, persistent=False)
        hook = w.register_hook(lambda g, m=module: g * m.weight_mask)
        module._lowbit_prune = {"hook": hook, "prev_post_step": prev if callable(prev) else None}
        module.post_step = types.MethodType(_post_step, module)
    else:
        module.weight_mask = mask & module.weight_mask
    with torch.no_grad():
        w.mul_(module.weight_mask)


def remove_mask(module: nn.Module) -> None:
    """Undo ``apply_mask`` (the weights keep their zeros but may grow again: DSD's re-dense)."""
    state = getattr(module, "_lowbit_prune", None)
    if state is None:
        return
    state["hook"].remove()
    del module.post_step
    if state["prev_post_step"] is not None and not hasattr(type(module), "post_step"):
        module.post_step = state["prev_post_step"]
    del module._buffers["weight_mask"]
    del module._lowbit_prune


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Current keep-masks of the pruned layers."""
    return {n: m.weight_mask for n, m in layers(model).items() if hasattr(m, "weight_mask")}


def prune(model: nn.Module, targets: Mapping[str, Any]) -> dict[str, float]:
    """Prune each named layer to its target; returns the achieved sparsity per layer.

    A target is a float sparsity in [0, 1] or a string ``"<q>std"`` (threshold q * std).
    """
    found = layers(model)
    out = {}
    for name, target in targets.items():
        if name not in found:
            raise KeyError(f"layer {name!r} not prunable; layers: {', '.join(found)}")
        m = found[name]
        old = getattr(m, "weight_mask", None)
        kw = parse_target(target)
        mask = threshold_mask(m.weight, mask=old, **kw)
        apply_mask(m, mask)
        out[name] = 1.0 - float(m.weight_mask.float().mean())
    return out


def parse_target(target: Any) -> dict[str, float]:
    if isinstance(target, str) and target.endswith("std"):
        return {"q": float(target[:-3])}
    t = float(target)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"pruning target {target!r}: expected a sparsity in [0, 1] or '<q>std'")
    return {"sparsity": t}


def schedule(targets: Mapping[str, Any], steps: int) -> list[dict[str, Any]]:
    """Rising targets for iterative pruning: step i of n keeps ``(1-s)**(i/n)`` of the
    weights (geometric in the kept fraction), or uses ``q * i/n`` for q·std targets."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    plan = []
    for i in range(1, steps + 1):
        f = i / steps
        step = {}
        for name, t in targets.items():
            kw = parse_target(t)
            step[name] = (1.0 - (1.0 - kw["sparsity"]) ** f) if "sparsity" in kw \
                else f"{kw['q'] * f:.6g}std"
        plan.append(step)
    return plan


def iterative_prune(model: nn.Module, targets: Mapping[str, Any], retrain: Callable[[int], Any],
                    steps: int = 3, progress: Callable[[str], None] | None = None
                    ) -> list[dict[str, float]]:
    """Prune -> retrain, ``steps`` times with rising thresholds; ``retrain(step)`` trains the
    model in place (e.g. ``lowbit.train.loop.fit``).  Returns the sparsities after each step."""
    history = []
    for i, step in enumerate(schedule(targets, steps)):
        achieved = prune(model, step)
        if progress:
            progress(f"prune step {i + 1}/{steps}: " + ", ".join(
                f"{n} {s:.1%}" for n, s in achieved.items()))
        retrain(i)
        history.append(achieved)
    return history


class Gradual(nn.Module):
    """Gradual pruning inside one training run (Zhu & Gupta 2017): every ``every`` optimizer
    steps until ``end`` the sparsity of each layer rises along ``s_t = s * (1 - (1 - t/end)**3)``
    (fast at first, slow near the target).  Attach it with ``model.add_module(...)`` (it has no
    parameters or buffers, so ``state_dict`` is unchanged): ``fit`` then calls its
    ``post_step`` after every optimizer step.  Remove it after training (``detach``)."""

    def __init__(self, model: nn.Module, targets: Mapping[str, Any], end: int, every: int = 50):
        super().__init__()
        if end < 1 or every < 1:
            raise ValueError(f"gradual pruning: end and every must be >= 1, got {end}, {every}")
        found = layers(model)
        self._layers = {n: found[n] for n in targets}  # a plain dict: not submodules
        self._targets = {n: parse_target(t) for n, t in targets.items()}
        for n, kw in self._targets.items():
            if "sparsity" not in kw:
                raise ValueError(f"gradual pruning: layer {n!r} needs a sparsity, not q*std")
        self.end, self.every, self.t = int(end), int(every), 0

    def target_at(self, t: int) -> dict[str, float]:
        f = 1.0 - (1.0 - min(t, self.end) / self.end) ** 3
        return {n: kw["sparsity"] * f for n, kw in self._targets.items()}

    def post_step(self) -> None:
        self.t += 1
        if self.t % self.every == 0 or self.t == self.end:
            if self.t <= self.end:
                for n, s in self.target_at(self.t).items():
                    m = self._layers[n]
                    old = getattr(m, "weight_mask", None)
                    apply_mask(m, threshold_mask(m.weight, sparsity=s, mask=old))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        return x


def gradual_prune(model: nn.Module, targets: Mapping[str, Any], train: Callable[[], Any],
                  end: int, every: int = 50) -> dict[str, float]:
    """Run ``train()`` (e.g. ``fit``) with a ``Gradual`` schedule attached, then make sure every
    layer sits exactly at its target; returns the achieved sparsities."""
    model.add_module("_gradual_pruning", Gradual(model, targets, end, every))
    try:
        train()
    finally:
        del model._gradual_pruning
    return prune(model, targets)


def dsd(model: nn.Module, targets: Mapping[str, Any], train_sparse: Callable[[], Any],
        train_dense: Callable[[], Any]) -> dict[str, float]:
    """Dense-Sparse-Dense (Han et al., ICLR 2017) on an already trained dense model: prune to
    ``targets`` and retrain (``train_sparse``), then drop the masks and retrain everything
    (``train_dense``, usually at a lower learning rate).  Returns the sparse phase's sparsity."""
    achieved = prune(model, targets)
    train_sparse()
    for m in layers(model).values():
        remove_mask(m)
    train_dense()
    return achieved


DEFAULT_SPARSITIES = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)


def sensitivity(model: nn.Module, evaluate: Callable[[nn.Module], float],
                sparsities: Iterable[float] = DEFAULT_SPARSITIES,
                names: Iterable[str] | None = None) -> dict[str, dict[float, float]]:
    """Accuracy when ONE layer at a time is magnitude-pruned to each sparsity (no retraining;
    the paper's Fig. 5 without retraining).  The model is restored afterwards."""
    found = layers(model)
    table: dict[str, dict[float, float]] = {}
    for name in (names or found):
        m = found[name]
        saved = m.weight.detach().clone()
        table[name] = {}
        for s in sparsities:
            with torch.no_grad():
                keep = threshold_mask(m.weight, sparsity=float(s))
                m.weight.mul_(keep)
            table[name][float(s)] = float(evaluate(model))
            with torch.no_grad():
                m.weight.copy_(saved)
    return table


def format_sensitivity(table: Mapping[str, Mapping[float, float]]) -> str:
    names = list(table)
    sps = sorted({s for row in table.values() for s in row})
    lines = ["sparsity  " + "  ".join(f"{n:>8}" for n in names)]
    for s in sps:
        lines.append(f"{s:8.0%}  " + "  ".join(f"{table[n].get(s, float('nan')):8.2%}"
                                                for n in names))
    return "\n".join(lines)


def plot_sensitivity(table: Mapping[str, Mapping[float, float]], path: str,
                     title: str = "pruning sensitivity (no retraining)") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in table.items():
        xs = sorted(row)
        ax.plot([100 * x for x in xs], [100 * row[x] for x in xs], marker="o", label=name)
    ax.set_xlabel("weights pruned (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def zero_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Clear optimizer state (Adam moments, momentum) at pruned positions (optional hygiene;
    ``post_step`` already keeps pruned weights at zero)."""
    for m in layers(model).values():
        mask = getattr(m, "weight_mask", None)
        st = optimizer.state.get(m.weight) if mask is not None else None
        if not st:
            continue
        for v in st.values():
            if isinstance(v, torch.Tensor) and v.shape == mask.shape:
                v.mul_(mask)

