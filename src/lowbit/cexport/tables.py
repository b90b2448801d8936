"""The input normalisation table (numpy only): the formula of
``lowbit.runtime.float_ops.input_tables`` (tests/deploy/test_mcu.py checks they agree), here so
that the exporter imports neither the runtime nor its compiled kernels."""
from __future__ import annotations

import numpy as np


def input_tables(norm, channels: int) -> np.ndarray:
    """float32 (C, 256): float32((u8 / scale - mean_c) / std_c) computed in float64, or
    u8 / 255 without a normalisation; one channel's statistics serve every channel."""
    if norm is None:
        return np.broadcast_to(np.arange(256, dtype=np.float32) / np.float32(255), (channels, 256))
    mean = np.atleast_1d(np.asarray(norm["mean"], np.float64)).reshape(-1, 1)
    std = np.atleast_1d(np.asarray(norm["std"], np.float64)).reshape(-1, 1)
    if mean.shape[0] != std.shape[0]:
        mean, std = np.broadcast_arrays(mean, std)
    scale = float(norm.get("scale", 255.0))
    t = ((np.arange(256, dtype=np.float64)[None] / scale - mean) / std).astype(np.float32)
    return np.broadcast_to(t, (channels, 256))
