"""Seeded ways to cut a labelled image set: a train/validation split and random subsets.

Both are pure functions of ``seed`` (numpy's PCG64 via ``default_rng``), so the same seed gives
the same indices on every machine and in every process.
"""
from __future__ import annotations

import numpy as np

__all__ = ["train_val_split", "subset"]


def _check_pair(images: np.ndarray, labels: np.ndarray) -> int:
    if len(images) != len(labels):
        raise ValueError(f"labels: expected {len(images)} (one per image), got {len(labels)}")
    return len(images)


def train_val_split(images: np.ndarray, labels: np.ndarray, val_size: int | float = 5000,
                    seed: int = 0):
    """Split into ``(train_images, train_labels), (val_images, val_labels)``, disjoint.

    ``val_size`` is a count, or a fraction when it is a float in (0, 1).  ``0`` gives an empty
    validation set.  The permutation depends only on ``seed`` and the number of images.
    """
    n = _check_pair(images, labels)
    if isinstance(val_size, float) and 0 < val_size < 1:
        val_size = int(round(val_size * n))
    val_size = int(val_size)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size: expected 0 <= val_size < {n} (the number of images), "
                         f"got {val_size}")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def subset(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0):
    """A seeded random subset of ``size`` images (in their original order), for quick runs."""
    n = _check_pair(images, labels)
    if not 0 < size <= n:
        raise ValueError(f"size: expected 1..{n}, got {size}")
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:size])
    return images[idx], labels[idx]
