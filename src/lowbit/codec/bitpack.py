"""Fixed-width packing of unsigned b-bit integers into a byte stream (numpy only).

Stream convention: value ``i`` occupies stream bits ``i*b .. i*b+b-1``, least significant bit
first, and stream bit ``k`` is bit ``k % 8`` (LSB first) of byte ``k // 8``.  The last byte is
zero padded.  (This is the storage of codebook indices and sparse gaps; the +-1 bit-plane
packing of activations and binary weights is the 64-per-uint64 convention in docs/design.md.)
"""
from __future__ import annotations

import numpy as np

from lowbit.codec.container import FormatError

MAX_BITS = 32


def nbytes(count: int, bits: int) -> int:
    """Bytes that ``count`` values of ``bits`` bits occupy."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_BITS}, got {bits!r}")


def pack(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers ``< 2**bits`` (any shape, flattened in C order)."""
    _check_bits(bits)
    v = np.asarray(values).reshape(-1)
    if v.size == 0:
        return b""
    if v.dtype.kind not in "iub":
        raise ValueError(f"pack expects integers, got dtype {v.dtype}")
    if v.min() < 0 or int(v.max()) >= (1 << bits):
        raise ValueError(f"values must lie in [0, {(1 << bits) - 1}] for {bits} bits, "
                         f"got [{int(v.min())}, {int(v.max())}]")
    v = v.astype(np.uint64)
    planes = ((v[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def _dtype_for(bits: int) -> np.dtype:
    return np.dtype(np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32)


def unpack(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack``: ``count`` values as the smallest unsigned dtype that holds them.

    Refuses (``FormatError``) a stream of the wrong length or with non-zero pad bits.
    """
    _check_bits(bits)
    need = nbytes(count, bits)
    if len(data) != need:
        raise FormatError(f"packed stream: expected {need} bytes for {count} values of "
                          f"{bits} bits, got {len(data)}")
    dt = _dtype_for(bits)
    if count == 0:
        return np.zeros(0, dtype=dt)
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    used = count * bits
    if stream[used:].any():
        raise FormatError("packed stream: pad bits after the last value are not zero")
    planes = stream[:used].reshape(count, bits).astype(np.uint64)
    out = (planes << np.arange(bits, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    return out.astype(dt)
