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

__all__ = ["pack_levels", "unpack_levels", "check_packed", "packed"]


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


def _int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_packed(entry: dict, section) -> tuple:
    """The logical shape (OC, KH, KW, C) of a packed tensor, after checking its entry and that
    the section is exactly the layout the entry describes, with every pad bit 0 (the kernels
    rely on it: docs/design.md) and, for ternary levels, no sign bit on a zero weight."""
    if not isinstance(entry, dict):
        raise FormatError("packed tensor: the entry is not an object")
    shape, kind, bits = entry.get("shape"), entry.get("levels"), entry.get("bits", 1)
    if not (isinstance(shape, list) and len(shape) == 4 and all(_int(s, 1, 2**31 - 1)
                                                                for s in shape)):
        raise FormatError(f"packed tensor: field 'shape': expected [OC, KH, KW, C] of positive "
                          f"integers, got {str(shape)[:80]}")
    if not isinstance(kind, str) or kind not in ("binary", "ternary", "planes"):
        raise FormatError(f"packed tensor: unknown levels {str(kind)[:40]}")
    # levels step * u + offset: |step| <= 2^16, |offset| <= 2^bits (DoReFa: 2, -(2^bits - 1);
    # five-level: 1, -3), so the bit-plane kernels' int32 accumulators and the decoded int64
    # levels hold them
    if kind == "planes" and not (_int(bits, 1, 32) and _int(entry.get("step"), -2**16, 2**16)
                                 and _int(entry.get("offset"), -2**bits, 2**bits)):
        raise FormatError(f"packed tensor: planes need integer 'bits' (1..32), 'step' "
                          f"(|step| <= 2^16) and 'offset' (|offset| <= 2^bits), got "
                          f"{str(bits)[:20]}, {str(entry.get('step'))[:20]}, "
                          f"{str(entry.get('offset'))[:20]}")
    oc, kh, kw, c = shape
    w = _words(c)
    want = {"binary": (oc, kh, kw, w), "ternary": (2, oc, kh, kw, w),
            "planes": (oc, kh, kw, bits, w)}[kind]
    if not isinstance(section, np.ndarray) or section.dtype != np.uint64 \
            or section.shape != want:
        got = (f"{section.dtype} {section.shape}" if isinstance(section, np.ndarray)
               else type(section).__name__)
        raise FormatError(f"packed tensor: {kind} levels of shape {shape} need a uint64 "
                          f"section of shape {want}, got {got}")
    if c % 64 and (section[..., -1] >> np.uint64(c % 64)).any():
        raise FormatError(f"packed tensor: pad bits past channel {c} are set (they must be 0)")
    if kind == "ternary" and (section[0] & ~section[1]).any():
        raise FormatError("packed tensor: ternary sign bits set on zero weights (mask 0)")
    return tuple(shape)


def unpack_levels(entry: dict, section: np.ndarray) -> np.ndarray:
    """The dense float32 levels (OC, KH, KW, C) of a packed tensor."""
    check_packed(entry, section)
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


register_decoder("packed", unpack_levels, check_packed)
