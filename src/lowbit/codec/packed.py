"""Bit-packed weight encoding ``"packed"`` of model files (numpy only).

A quantized layer's integer weight levels ``Wl`` with logical shape ``(OC, KH, KW, C)`` (dense
layers: ``(OC, 1, 1, K)`` or ``(OC, H, W, C)`` for a dense layer that reads a spatial input)
are stored packed along the last axis, 64 per uint64 word (docs/design.md):

- ``levels="binary"``: one plane, bit 1 = +1, bit 0 = -1: section ``(OC, KH, KW, ceil(C/64))``;
- ``levels="ternary"``: two planes, sign (bit 1 = +1) and nonzero mask:
  section ``(2, OC, KH, KW, ceil(C/64))``;
- ``levels="planes"``: unsigned ``u`` in ``bits`` planes (plane n = bit n) with
  ``Wl = step * u + offset`` (DoReFa k-bit: step 2, offset -(2^k - 1); five-level: 1, -2):
  section ``(OC, KH, KW, bits, ceil(C/64))``.

Entry: ``{"enc": "packed", "levels": ..., "shape": [OC, KH, KW, C], "bits": b, "step": s,
"offset": o}``.  The decoder gives the dense float32 levels ``(OC, KH, KW, C)``; the runtime
uses the sections directly (1 bit per binary weight in memory).
"""
from __future__ import annotations

import numpy as np

from lowbit.codec.container import FormatError
from lowbit.codec.model import Tensor, register_decoder

__all__ = ["pack_levels", "unpack_levels", "packed"]


def _words(k: int) -> int:
    return (k + 63) // 64


def _pack01(bits01: np.ndarray) -> np.ndarray:
    """(..., K) of 0/1 -> (..., ceil(K/64)) uint64, element j*64+i = bit i of word j."""
    k = bits01.shape[-1]
    pad = _words(k) * 64 - k
    b = np.concatenate([bits01.astype(np.uint8),
                        np.zeros(bits01.shape[:-1] + (pad,), np.uint8)], axis=-1)
    by = np.packbits(b.reshape(b.shape[:-1] + (-1, 8)), axis=-1, bitorder="little")
    return np.ascontiguousarray(by.reshape(b.shape[:-1] + (-1,))).view(np.uint64)


def _unpack01(words: np.ndarray, k: int) -> np.ndarray:
    by = np.ascontiguousarray(words).view(np.uint8)
    return np.unpackbits(by, axis=-1, bitorder="little")[..., :k]


def pack_levels(levels: np.ndarray, kind: str, bits: int = 1, step: int = 1,
                offset: int = 0) -> tuple[np.ndarray, dict]:
    """Integer levels (..., C) -> (section uint64, entry)."""
    lv = np.asarray(levels)
    shape = [int(s) for s in lv.shape]
    entry = {"enc": "packed", "levels": kind, "shape": shape, "bits": int(bits),
             "step": int(step), "offset": int(offset)}
    if kind == "binary":
        if not np.isin(lv, (-1, 1)).all():
            raise ValueError("pack_levels: binary levels must be -1 or +1")
        return _pack01(lv > 0), entry
    if kind == "ternary":
        if not np.isin(lv, (-1, 0, 1)).all():
            raise ValueError("pack_levels: ternary levels must be -1, 0 or +1")
        return np.stack([_pack01(lv > 0), _pack01(lv != 0)]), entry
    if kind == "planes":
        u = (lv - offset) / step
        if not (np.all(u == np.round(u)) and u.min() >= 0 and u.max() < (1 << bits)):
            raise ValueError(f"pack_levels: levels are not step*u+offset with u in {bits} bits")
        u = u.astype(np.int64)
        planes = np.stack([_pack01((u >> n) & 1) for n in range(bits)], axis=-2)
        return planes, entry
    raise ValueError(f"pack_levels: unknown kind {kind!r}")


def unpack_levels(entry: dict, section: np.ndarray) -> np.ndarray:
    """The dense float32 levels (OC, KH, KW, C) of a packed tensor."""
    if not isinstance(section, np.ndarray) or section.dtype != np.uint64:
        raise FormatError("packed tensor: the section is not a uint64 array")
    try:
        shape, kind = [int(s) for s in entry["shape"]], entry["levels"]
        c = shape[-1]
        if kind == "binary":
            out = 2.0 * _unpack01(section, c) - 1.0
        elif kind == "ternary":
            out = (2.0 * _unpack01(section[0], c) - 1.0) * _unpack01(section[1], c)
        elif kind == "planes":
            bits = int(entry["bits"])
            u = sum(_unpack01(section[..., n, :], c).astype(np.int64) << n for n in range(bits))
            out = int(entry["step"]) * u + int(entry["offset"])
        else:
            raise FormatError(f"packed tensor: unknown levels {kind!r}")
        return np.asarray(out, np.float32).reshape(shape)
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"packed tensor: bad entry or section ({e})") from None


def packed(levels: np.ndarray, kind: str, bits: int = 1, step: int = 1, offset: int = 0) -> Tensor:
    """A model-file tensor storing integer weight levels bit-packed."""
    section, entry = pack_levels(levels, kind, bits, step, offset)
    return Tensor(entry, section, {"bytes": section.nbytes})


register_decoder("packed", unpack_levels)
