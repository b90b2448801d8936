"""The runtime's input contract: what ``Runtime.predict`` / ``logits`` / ``run`` accept.

- **uint8 pixels** are the default input, shaped (N, C, H, W) as the graph input says (or
  (N, H, W) for one channel); they go through the model's stored normalisation tables.
- Other integer arrays and lists are converted to uint8 only when every value fits 0..255.
- **Float input** only with ``normalized=True``: values already normalised as in training
  (float32 / float64, finite).  Float pixels without it are refused (a float32 image / 255 fed
  as pixels was a silent wrong answer before).
- bool, complex, object and string arrays, NaN and inf are refused; so is a shape other than
  the graph input's, with the expected shape and layout named.
- Any memory layout is accepted (a transposed or sliced view is copied to C order, which the
  native executor reads).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["check_input", "InputError"]


class InputError(ValueError):
    """Input that the model cannot take (says what was expected)."""


def _shape(x: np.ndarray, spec: Mapping[str, Any], where: str) -> np.ndarray:
    shape = spec.get("shape")
    if shape is None:
        return np.ascontiguousarray(x if x.ndim != 3 else x[:, None])
    want, given = tuple(int(v) for v in shape), tuple(x.shape)
    if len(want) == 3 and x.ndim == 3 and want[0] == 1:
        x = x[:, None]
    if x.shape[1:] != want:
        hint = " (N, H, W) or" if len(want) == 3 and want[0] == 1 else ""
        layout = "NCHW" if len(want) == 3 else "(N, features)"
        raise InputError(f"{where}: input shape {given}: expected{hint} "
                         f"(N, {', '.join(map(str, want))}) in {layout} layout")
    return np.ascontiguousarray(x)


def check_input(x: Any, spec: Mapping[str, Any], normalized: bool = False,
                where: str = "runtime") -> np.ndarray:
    """``x`` as the graph input takes it: uint8 (N, C, H, W), or float32 with ``normalized``.
    ``spec``: the graph input (``shape``, ``dtype``)."""
    if not normalized and type(x) is np.ndarray and x.dtype == np.uint8:
        shape = spec.get("shape")                 # the common cases, checked in ~1 us
        if x.ndim == 4 and list(x.shape[1:]) == shape:
            return x if x.flags.c_contiguous else np.ascontiguousarray(x)
        if x.ndim == 3 and shape and shape[0] == 1 and list(x.shape[1:]) == shape[1:]:
            return np.ascontiguousarray(x[:, None])
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InputError(f"{where}: input is not an array of numbers ({e})") from None
    kind = a.dtype.kind
    if a.ndim < 2:
        raise InputError(f"{where}: input has shape {a.shape}: expected a batch (N, ...)")
    if kind == "b":
        raise InputError(f"{where}: input is a bool array; pass uint8 pixels 0..255")
    if kind not in "uif":
        raise InputError(f"{where}: input dtype {a.dtype} is not numeric; pass uint8 pixels")
    if normalized:
        if kind != "f":
            raise InputError(f"{where}: normalized=True expects float input already normalised "
                             f"as in training, got dtype {a.dtype}")
        a = a.astype(np.float32, copy=False)
        if a.size and not np.isfinite(a).all():
            raise InputError(f"{where}: input contains NaN or inf")
        return _shape(a, spec, where)
    if kind == "f":
        raise InputError(f"{where}: got {a.dtype} input; pass uint8 pixels 0..255 (the model "
                         f"normalises them itself), or float input already normalised as in "
                         f"training with normalized=True")
    if a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InputError(f"{where}: pixel values must lie in 0..255, got {a.min()}..{a.max()} "
                             f"(dtype {a.dtype})")
        a = a.astype(np.uint8)
    return _shape(a, spec, where)
