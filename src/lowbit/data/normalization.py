"""Input normalisation, the one definition shared by training, export and the runtime.

A model sees ``x[c] = (u8[c] / 255 - mean[c]) / std[c]`` as float32, with ``u8`` the raw uint8
pixels shaped ``(N, C, H, W)`` (a gray ``(N, H, W)`` array is one channel).  ``mean`` and ``std``
are measured on the training images when a run starts and stored in its checkpoint
(``"normalization"``), so anything that runs the model later reproduces the same input exactly.

One channel (Fashion-MNIST, any gray data) keeps one scalar ``mean`` / ``std``, and its dict form
is ``{"mean": float, "std": float, "scale": 255.0}`` exactly as before per-channel support, so
old checkpoints and model files read unchanged.  Several channels (RGB) carry one value per
channel: ``{"mean": [r, g, b], "std": [r, g, b], "scale": 255.0}``.  A one-element list is
the same thing as a scalar.

To make "exactly" true across numpy, torch and C++, the mapping is defined as one 256-entry
float32 look-up table per channel (:meth:`Normalization.tables`, computed in float64 and
rounded once); every implementation indexes that table with the pixel value instead of re-doing
the arithmetic, whose float32 rounding differs between libraries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np

__all__ = ["Normalization"]

Values = Union[float, tuple[float, ...]]


def _values(name: str, value) -> tuple[float, ...] | float:
    """A float for a scalar, else a tuple of floats (one per channel)."""
    if isinstance(value, (str, bytes)) or value is None or np.ndim(value) > 1:
        raise ValueError(f"normalization {name}: expected a number or a flat list of numbers "
                         f"(one per channel), got {value!r}")
    try:
        if np.ndim(value) == 0:
            return float(value)
        out = tuple(float(v) for v in np.asarray(value).tolist())
    except (TypeError, ValueError):
        raise ValueError(f"normalization {name}: expected numbers, got {value!r}") from None
    if not out:
        raise ValueError(f"normalization {name}: expected at least one value, got none")
    return out


@dataclass(frozen=True)
class Normalization:
    """``x[c] = (u8[c] / scale - mean[c]) / std[c]`` (float32); ``scale`` is 255 for 8-bit pixels.

    ``mean`` and ``std`` are floats (one channel) or tuples of floats, one per channel; a scalar
    given with a tuple is used for every channel.
    """

    mean: Values
    std: Values
    scale: float = 255.0

    def __post_init__(self):
        mean, std = _values("mean", self.mean), _values("std", self.std)
        if isinstance(mean, tuple) and isinstance(std, tuple) and len(mean) != len(std):
            raise ValueError(f"normalization std: expected {len(mean)} values (one per channel, "
                             f"as in mean), got {len(std)}")
        if isinstance(mean, tuple) != isinstance(std, tuple):  # broadcast the scalar one
            n = len(mean) if isinstance(mean, tuple) else len(std)
            mean = mean if isinstance(mean, tuple) else (mean,) * n
            std = std if isinstance(std, tuple) else (std,) * n
        if isinstance(mean, tuple) and len(mean) == 1:  # one channel is always the scalar form
            mean, std = mean[0], std[0]
        for i, (m, s) in enumerate(zip(np.atleast_1d(mean), np.atleast_1d(std))):
            where = f"[{i}]" if isinstance(mean, tuple) else ""
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"normalization std{where}: expected a positive number, got {s}")
            if not math.isfinite(m):
                raise ValueError(f"normalization mean{where}: expected a finite number, got {m}")
        scale = float(self.scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"normalization scale: expected a positive number, got {self.scale}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", scale)

    @property
    def channels(self) -> int:
        """How many input channels this normalisation is for (1 for a scalar mean/std)."""
        return len(self.mean) if isinstance(self.mean, tuple) else 1

    @classmethod
    def from_images(cls, images: np.ndarray, channels: int | None = None) -> "Normalization":
        """Mean and std of ``images / 255`` per channel (computed in float64).

        ``images`` is ``(N, H, W)`` (one channel) or ``(N, C, H, W)``; one channel gives one
        scalar mean/std over all pixels, as always.  ``channels``, when given, is the number of
        channels the images must have.
        """
        images = np.asarray(images)
        if images.ndim not in (3, 4):
            raise ValueError(f"images: expected shape (N, H, W) or (N, C, H, W), "
                             f"got {images.shape}")
        c = 1 if images.ndim == 3 else images.shape[1]
        if channels is not None and c != channels:
            raise ValueError(f"images: expected {channels} channel(s), got {c} "
                             f"(shape {images.shape})")
        if len(images) == 0:
            raise ValueError("images: expected at least one image to measure, got 0")
        if c == 1:  # exactly the arithmetic of the scalar version, so old runs are unchanged
            x = np.asarray(images, np.float64) / 255.0
            return cls(mean=float(x.mean()), std=float(x.std()))
        means, stds = [], []
        for i in range(c):
            x = np.asarray(images[:, i], np.float64) / 255.0
            means.append(float(x.mean()))
            stds.append(float(x.std()))
        return cls(mean=tuple(means), std=tuple(stds))

    def tables(self) -> np.ndarray:
        """float32 ``(C, 256)``: the normalised value of every pixel value, for every channel."""
        mean = np.atleast_1d(np.asarray(self.mean, np.float64))[:, None]
        std = np.atleast_1d(np.asarray(self.std, np.float64))[:, None]
        pixels = np.arange(256, dtype=np.float64)[None]
        return ((pixels / self.scale - mean) / std).astype(np.float32)

    def table(self) -> np.ndarray:
        """float32 ``(256,)``: the look-up table of a one-channel normalisation."""
        if self.channels != 1:
            raise ValueError(f"normalization: table() is for one channel, this one has "
                             f"{self.channels}; use tables() (one row per channel)")
        return self.tables()[0]

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W)`` or ``(N, C, H, W)`` -> normalised float32 ``(N, C, H, W)``."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"images: expected dtype uint8, got {images.dtype}")
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4:
            raise ValueError(f"images: expected shape (N, H, W) or (N, C, H, W), "
                             f"got {images.shape}")
        if images.shape[1] != self.channels:
            raise ValueError(f"images: expected {self.channels} channel(s) (as the normalization "
                             f"has), got {images.shape[1]} (shape {images.shape})")
        if self.channels == 1:
            return self.tables()[0][images]
        return self.tables()[np.arange(self.channels)[None, :, None, None], images]

    def to_dict(self) -> dict:
        """``{"mean", "std", "scale"}``: floats for one channel, lists of floats for several."""
        if self.channels == 1:
            return {"mean": self.mean, "std": self.std, "scale": self.scale}
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict, source: str = "normalization") -> "Normalization":
        """Read :meth:`to_dict`'s form; errors start with ``source`` (e.g. the file's name)."""
        if not isinstance(d, dict) or "mean" not in d or "std" not in d:
            raise ValueError(f"{source}: expected a dict with 'mean' and 'std', got {d!r}")
        try:
            return cls(d["mean"], d["std"], d.get("scale", 255.0))
        except (TypeError, ValueError) as e:
            msg = str(e).removeprefix("normalization ")
            raise ValueError(f"{source}: {msg}") from None

