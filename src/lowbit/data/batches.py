"""A tiny numpy mini-batch iterator (the torch side has its own in ``lowbit.train``)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["batch_order", "iter_batches"]


def batch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` items for one epoch: a pure function of (seed, epoch).

    Training uses this so that a resumed run visits the data in exactly the same order as an
    uninterrupted one, without having to save an iterator's state.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


def iter_batches(images: np.ndarray, labels: np.ndarray, batch_size: int,
                 seed: int | None = None, epoch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(images, labels)`` batches; shuffled by ``batch_order`` when ``seed`` is given.

    The last batch may be smaller.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    n = len(images)
    order = batch_order(n, seed, epoch) if seed is not None else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield images[idx], labels[idx]
