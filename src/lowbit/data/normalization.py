"""Input normalisation, the one definition shared by training, export and the runtime.

A model sees ``x = (u8 / 255 - mean) / std`` as float32, with ``u8`` the raw uint8 pixels shaped
``(N, 1, 28, 28)``.  ``mean`` and ``std`` are measured on the training images when a run starts
and stored in its checkpoint (``"normalization"``), so anything that runs the model later
reproduces the same input exactly.

To make "exactly" true across numpy, torch and C++, the mapping is defined as a 256-entry
float32 look-up table (:meth:`Normalization.table`, computed in float64 and rounded once);
every implementation indexes that table with the pixel value instead of re-doing the
arithmetic, whose float32 rounding differs between libraries.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Normalization"]


@dataclass(frozen=True)
class Normalization:
    """``x = (u8 / scale - mean) / std`` (float32); ``scale`` is 255 for 8-bit pixels."""

    mean: float
    std: float
    scale: float = 255.0

    def __post_init__(self):
        if not (np.isfinite(self.std) and self.std > 0):
            raise ValueError(f"normalization std: expected a positive number, got {self.std}")
        if not np.isfinite(self.mean):
            raise ValueError(f"normalization mean: expected a finite number, got {self.mean}")

    @classmethod
    def from_images(cls, images: np.ndarray) -> "Normalization":
        """Mean and std of ``images / 255`` over all pixels (computed in float64)."""
        x = np.asarray(images, np.float64) / 255.0
        return cls(mean=float(x.mean()), std=float(x.std()))

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` -> normalised float32 ``(N, 1, 28, 28)``."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"images: expected dtype uint8, got {images.dtype}")
        if images.ndim == 3:
            images = images[:, None]
        return self.table()[images]

    def table(self) -> np.ndarray:
        """float32 ``(256,)``: the normalised value of every possible pixel value."""
        return ((np.arange(256, dtype=np.float64) / self.scale - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "normalization") -> "Normalization":
        try:
            return cls(float(d["mean"]), float(d["std"]), float(d.get("scale", 255.0)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: expected a dict with 'mean' and 'std', got {d!r}") from e
