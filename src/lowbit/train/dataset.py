"""Image sets as torch tensors: uint8 pixels on the device, normalised batch by batch.

``ImageSet`` keeps the raw uint8 images (4x smaller than float) on the training device and maps
each batch, channel by channel, through the normalisation look-up tables of
``lowbit.data.Normalization``, so the float input a model sees is bit-identical to what numpy
(and later the runtime) computes.  Images may have any shape ``(N, C, H, W)``.
It is also a ``torch.utils.data.Dataset`` for code that prefers a ``DataLoader``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lowbit.data import Normalization

__all__ = ["ImageSet", "check_arrays"]


def check_arrays(images, labels, what: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """Validate a ``(images, labels)`` pair: uint8 ``(N, H, W)`` / ``(N, C, H, W)`` (any C, H, W)
    and integer labels ``(N,)``; returns them with images shaped ``(N, C, H, W)``."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 pixels (as lowbit.data.load returns), "
                         f"got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or 0 in images.shape[1:]:
        raise ValueError(f"{what}: expected shape (N, H, W) or (N, C, H, W) with C, H, W >= 1, "
                         f"got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{what} labels: expected shape ({len(images)},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} labels: expected integers, got dtype {labels.dtype}")
    return images, labels.astype(np.int64)


class ImageSet(Dataset):
    """uint8 images + int64 labels on ``device``; ``batch(idx)`` returns normalised float32.

    Channel ``c`` goes through row ``c`` of ``normalization.tables()``, exactly as
    ``Normalization.apply`` does in numpy; the images must have ``normalization.channels``.
    """

    def __init__(self, images, labels, normalization: Normalization,
                 device: str | torch.device = "cpu", what: str = "images"):
        images, labels = check_arrays(images, labels, what)
        if images.shape[1] != normalization.channels:
            raise ValueError(f"{what}: expected {normalization.channels} channel(s) (as the input "
                             f"normalization has), got {images.shape[1]} (shape {images.shape})")
        self.device = torch.device(device)
        self.normalization = normalization
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        self.labels = torch.from_numpy(labels).to(self.device)
        tables = normalization.tables()  # (C, 256)
        self.table = torch.from_numpy(tables.reshape(-1)).to(self.device)  # channel c at 256 * c
        c = tables.shape[0]
        self._offsets = (torch.arange(c, device=self.device).view(1, c, 1, 1) * 256
                         if c > 1 else None)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float32 images ``(B, C, H, W)`` and int64 labels for the given indices."""
        return self.normalise(self.images[idx]), self.labels[idx]

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 images ``(B, C, H, W)`` (of this set, or changed, e.g. compressed) through the
        normalisation tables: float32, the same values ``batch`` gives."""
        pixels = pixels.long()
        if self._offsets is not None:
            pixels = pixels + self._offsets
        return self.table[pixels]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch(slice(i, i + 1))
        return x[0], y[0]
