"""Trained quantization by weight sharing (Deep Compression, section 3).

Per layer, the surviving (non-pruned) weights are clustered by 1-D k-means into ``2**bits``
centroids; every weight then *is* its centroid.  Initialisation: ``"linear"`` (evenly spaced
between min and max: the paper's choice, it keeps the rare large weights), ``"random"``
(Forgy: centroids drawn from the weights) or ``"density"`` (evenly spaced quantiles of the
weight distribution).

Fine-tuning: ``attach`` replaces a layer's ``weight`` parameter by a ``weight_centroids``
parameter of shape ``(k,)`` plus a fixed assignment ``weight_index`` (``k`` marks a pruned
weight); before every forward the layer's weight is rebuilt as ``[centroids, 0][index]``.
Autograd's backward of that gather is an index-add, so each centroid's gradient is exactly the
sum of the gradients of its weights, and pruned weights stay zero (they read a constant).  ``detach_shared``
turns the layer back into a plain layer holding the shared values (for export / evaluation).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

INITS = ("linear", "random", "density")


def init_centroids(values: np.ndarray, k: int, init: str = "linear",
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Initial centroids (float64, ``k`` of them) for 1-D ``values``."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("k-means of an empty layer (every weight is pruned)")
    if init == "linear":
        return np.linspace(v.min(), v.max(), k)
    if init == "random":
        rng = rng or np.random.default_rng(0)
        return np.sort(rng.choice(v, size=k, replace=v.size < k))
    if init == "density":
        return np.quantile(v, (np.arange(k) + 0.5) / k)
    raise ValueError(f"init: expected one of {', '.join(INITS)}, got {init!r}")


def assign(values: np.ndarray, centroids: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """Index of the nearest centroid for every value (ties -> the lower index), as int64."""
    v = np.asarray(values).reshape(-1)
    c = np.asarray(centroids)
    out = np.empty(v.size, dtype=np.int64)
    for s in range(0, v.size, chunk):
        out[s:s + chunk] = np.abs(v[s:s + chunk, None] - c[None, :]).argmin(axis=1)
    return out


def kmeans(values: np.ndarray, k: int, init: str = "linear", iters: int = 500,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-D Lloyd k-means.  Returns ``(centroids float32 (k,), assignment int64)``.

    ``k`` is capped at the number of distinct values.  Empty clusters keep their centroid.
    Computed in float64; the centroids are rounded to float32 at the end and the assignment is
    recomputed against the rounded centroids, so it is exactly nearest for what is stored.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    k = int(min(k, np.unique(v).size))
    c = init_centroids(v, k, init, np.random.default_rng(seed))
    a = assign(v, c)
    for _ in range(iters):
        sums = np.bincount(a, weights=v, minlength=k)
        counts = np.bincount(a, minlength=k)
        c = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        new = assign(v, c)
        if np.array_equal(new, a):
            break
        a = new
    c32 = c.astype(np.float32)
    return c32, assign(v.astype(np.float32), c32)


def _pre_forward(module: nn.Module, args: Any) -> None:
    # index k (one past the centroids) is the pruned slot: a constant zero with no gradient.
    # index_select's backward is an index_add, i.e. the per-centroid sum of weight gradients.
    c = module.weight_centroids
    ext = torch.cat([c, c.new_zeros(1)])
    idx = module.weight_index
    module.weight = ext.index_select(0, idx.reshape(-1)).view(idx.shape)


def attach(module: nn.Module, centroids: torch.Tensor, index: torch.Tensor,
           mask: torch.Tensor) -> None:
    """Make ``module.weight`` a function of trainable centroids (see module doc)."""
    w = module.weight
    if index.shape != w.shape or mask.shape != w.shape:
        raise ValueError(f"index {tuple(index.shape)} / mask {tuple(mask.shape)} must have the "
                         f"weight's shape {tuple(w.shape)}")
    if hasattr(module, "_lowbit_prune"):
        from .prune import remove_mask
        remove_mask(module)  # the mask lives on in weight_mask below
    del module._parameters["weight"]
    module.register_parameter("weight_centroids", nn.Parameter(
        centroids.detach().to(device=w.device, dtype=w.dtype).clone()))
    mask = mask.to(device=w.device, dtype=torch.bool)
    index = torch.where(mask, index.to(device=w.device, dtype=torch.long), centroids.numel())
    module.register_buffer("weight_index", index, persistent=False)
    module.register_buffer("weight_mask", mask.to(device=w.device, dtype=torch.bool),
                           persistent=False)
    module._lowbit_share = module.register_forward_pre_hook(_pre_forward)
    _pre_forward(module, ())


def detach_shared(module: nn.Module) -> None:
    """Back to a plain layer whose ``weight`` parameter holds the shared values."""
    handle = getattr(module, "_lowbit_share", None)
    if handle is None:
        return
    handle.remove()
    with torch.no_grad():
        _pre_forward(module, ())
        w = module.weight.detach().clone()
    del module.weight
    del module._parameters["weight_centroids"]
    del module._buffers["weight_index"], module._buffers["weight_mask"]
    del module._lowbit_share
    module.weight = nn.Parameter(w)


def share(model: nn.Module, bits: dict[str, int], init: str = "linear", iters: int = 500,
          seed: int = 0) -> dict[str, dict[str, Any]]:
    """k-means every named layer's non-zero weights into ``2**bits[name]`` centroids and
    ``attach`` them.  Returns per layer: k, quantisation error (RMS), and the assignment."""
    from .prune import layers
    found = layers(model)
    out = {}
    for name, b in bits.items():
        if name not in found:
            raise KeyError(f"layer {name!r} cannot be shared; layers: {', '.join(found)}")
        m = found[name]
        w = m.weight.detach()
        mask = w != 0
        vals = w[mask].cpu().numpy()
        if vals.size == 0:
            raise ValueError(f"layer {name!r}: every weight is pruned")
        c, a = kmeans(vals, 1 << int(b), init, iters, seed)
        index = torch.zeros(w.shape, dtype=torch.long)
        index[mask.cpu()] = torch.from_numpy(a)
        err = float(np.sqrt(np.mean((c[a] - vals) ** 2)))
        attach(m, torch.from_numpy(c), index, mask)
        out[name] = {"k": int(c.size), "bits": int(b), "rms_error": err}
    return out


def round_centroids(model: nn.Module, dtype: torch.dtype = torch.float16) -> None:
    """Round every shared layer's centroids to ``dtype`` (kept as float32 values), so that a
    float16 codebook stores them exactly."""
    for m in model.modules():
        c = getattr(m, "weight_centroids", None)
        if isinstance(c, torch.Tensor):
            with torch.no_grad():
                c.copy_(c.to(dtype).to(c.dtype))
            _pre_forward(m, ())
