"""C99 text of constant data: exact float literals, packed bit words, C initialisers."""
from __future__ import annotations

import re

import numpy as np

__all__ = ["c_float", "c_array", "pack_layout", "struct_init"]

INT32_MIN = -(1 << 31)


def c_float(v: float) -> str:
    """An exact C99 float literal of the float32 ``v``: hexadecimal (``0x1.8p-3f``), so the
    compiler reads back the same bits; +-inf as ``INFINITY`` (math.h)."""
    f = float(np.float32(v))
    if f != f:
        raise ValueError("a NaN constant has no place in an exported model")
    if f in (float("inf"), float("-inf")):
        return "INFINITY" if f > 0 else "-INFINITY"
    h = f.hex()                                   # e.g. -0x1.8000000000000p+1
    m = re.match(r"(-?0x[01])\.?([0-9a-f]*)p([+-]\d+)", h)
    frac = m.group(2).rstrip("0")
    return f"{m.group(1)}{'.' + frac if frac else ''}p{m.group(3)}f"


def _items(ctype: str, a: np.ndarray) -> list[str]:
    if ctype == "float":
        return [c_float(v) for v in a]
    if ctype == "uint32_t":
        return [f"0x{int(v):08x}u" for v in a]
    if ctype == "int32_t":
        return ["(-2147483647 - 1)" if int(v) == INT32_MIN else str(int(v)) for v in a]
    if ctype == "uint8_t":
        return [str(int(v)) for v in a]
    raise ValueError(ctype)


def c_array(ctype: str, name: str, values, per_line: int = 8) -> str:
    """``static const <ctype> name[n] = {...};`` (flash), ``per_line`` items a line."""
    a = np.asarray(values).ravel()
    items = _items(ctype, a)
    if not items:
        items = ["0"]
    rows = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(rows)
    return f"static const {ctype} {name}[{len(items)}] = {{\n    {body}\n}};"


def pack_layout(pm1: np.ndarray, pstride: int) -> np.ndarray:
    """+-1 values (R, npix, C) -> (R, nwords) uint32 in the bits layout of lowbit_mcu.h: value
    (p, c) is bit p * pstride + c (1 = +1), unused bits 0."""
    r, npix, c = pm1.shape
    nwords = ((npix - 1) * pstride + c + 31) // 32
    bits = np.zeros((r, nwords * 32), np.uint8)
    idx = (np.arange(npix)[:, None] * pstride + np.arange(c)[None, :]).ravel()
    bits[:, idx] = (pm1.reshape(r, -1) > 0)
    packed = np.packbits(bits.reshape(r, nwords, 32), axis=2, bitorder="little")
    return np.ascontiguousarray(packed).view("<u4").reshape(r, nwords)


def struct_init(ctype: str, name: str, fields: dict) -> str:
    """``static const ctype name = {.field = value, ...};`` (values: C text or numbers)."""
    def text(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f".{k} = {text(x)}" for k, x in v.items()) + "}"
        if isinstance(v, float):
            return c_float(v)
        return str(v)
    body = ",\n    ".join(f".{k} = {text(v)}" for k, v in fields.items())
    return f"static const {ctype} {name} = {{\n    {body}\n}};"
