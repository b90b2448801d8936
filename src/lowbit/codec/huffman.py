"""Canonical Huffman coding of integer symbol streams (bitarray's C routines do the work).

A code is fully described by its **code lengths**: one length per symbol of the alphabet
``0 .. n_symbols-1`` (0 = the symbol does not occur).  Codes are assigned canonically: symbols
sorted by (length, symbol value), consecutive code values, as in DEFLATE; this is exactly what
``bitarray.util.canonical_decode`` reads.  Only the lengths are stored, packed 5 bits each
(``LENGTH_BITS``), because bitarray's decoder caps code lengths at 31 bits; when a pathological
frequency table would need longer codes the frequencies are flattened until they fit.

Payload bits are written MSB first within each byte (bitarray 'big' endianness); the last byte
is zero padded.  Degenerate streams: an empty stream has all lengths 0 and an empty payload; a
stream of one distinct symbol gets the 1-bit code '0' for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode, canonical_huffman, int2ba

from lowbit.codec import bitpack
from lowbit.codec.container import FormatError

MAX_LEN = 31
LENGTH_BITS = 5


@dataclass(frozen=True)
class Encoded:
    lengths: np.ndarray  # uint8 [n_symbols], 0 = unused symbol
    payload: bytes
    nbits: int           # payload bits actually used (excluding the pad of the last byte)

    @property
    def table_bytes(self) -> int:
        """Bytes of the stored code-length table."""
        return bitpack.nbytes(self.lengths.size, LENGTH_BITS)

    @property
    def nbytes(self) -> int:
        """Bytes this stream costs on disk: length table + payload."""
        return self.table_bytes + len(self.payload)


def _lengths_from_freq(freq: np.ndarray) -> np.ndarray:
    lengths = np.zeros(freq.size, dtype=np.uint8)
    used = np.flatnonzero(freq)
    if used.size == 0:
        return lengths
    f = freq[used].astype(np.int64)
    while True:
        code, _, _ = canonical_huffman({int(s): int(c) for s, c in zip(used, f)})
        lens = np.array([len(code[int(s)]) for s in used], dtype=np.int64)
        if lens.max() <= MAX_LEN:
            lengths[used] = lens
            return lengths
        f = (f >> 1) | 1  # flatten the distribution; terminates once all counts equal 1


def _canonical(lengths: np.ndarray) -> tuple[list[int], list[int]]:
    """(count per length, symbols in canonical order) from a code-length table."""
    lengths = np.asarray(lengths)
    used = np.flatnonzero(lengths)
    symbols = sorted(used.tolist(), key=lambda s: (int(lengths[s]), s))
    maxlen = int(lengths.max()) if used.size else 0
    count = [0] * (maxlen + 1)
    for s in symbols:
        count[int(lengths[s])] += 1
    return count, symbols


def codes(lengths: np.ndarray) -> dict[int, bitarray]:
    """The canonical code (symbol -> bitarray) that a length table describes."""
    count, symbols = _canonical(lengths)
    out: dict[int, bitarray] = {}
    code = 0
    for i, s in enumerate(symbols):
        n = int(lengths[s])
        out[s] = int2ba(code, n, "big")
        if i + 1 < len(symbols):
            code = (code + 1) << (int(lengths[symbols[i + 1]]) - n)
    return out


def code_lengths(symbols: np.ndarray, n_symbols: int) -> np.ndarray:
    """Optimal (length-limited to 31) code lengths for a stream over ``0..n_symbols-1``."""
    s = np.asarray(symbols).reshape(-1)
    if s.size and (s.min() < 0 or s.max() >= n_symbols):
        raise ValueError(f"symbols must lie in [0, {n_symbols - 1}], "
                         f"got [{int(s.min())}, {int(s.max())}]")
    return _lengths_from_freq(np.bincount(s.astype(np.int64), minlength=n_symbols))


def encode(symbols: np.ndarray, n_symbols: int) -> Encoded:
    """Huffman-code an integer stream over the alphabet ``0..n_symbols-1``."""
    s = np.asarray(symbols).reshape(-1)
    if s.size and s.dtype.kind not in "iu":
        raise ValueError(f"symbols must be integers, got dtype {s.dtype}")
    lengths = code_lengths(s, n_symbols)
    if s.size == 0:
        return Encoded(lengths, b"", 0)
    a = bitarray(endian="big")
    a.encode(codes(lengths), s.tolist())
    nbits = len(a)
    return Encoded(lengths, a.tobytes(), nbits)


def decode(lengths: np.ndarray, payload: bytes, count: int) -> np.ndarray:
    """Decode ``count`` symbols; refuses (``FormatError``) inconsistent tables or payloads."""
    lengths = np.asarray(lengths)
    dt = np.uint8 if lengths.size <= 256 else np.uint16 if lengths.size <= 65536 else np.uint32
    if count == 0:
        if payload:
            raise FormatError(f"huffman stream: 0 symbols but {len(payload)} payload bytes")
        return np.zeros(0, dtype=dt)
    if count > 8 * len(payload):     # every code is at least one bit long
        raise FormatError(f"huffman stream: {count} symbols cannot fit {len(payload)} payload "
                          f"bytes")
    if lengths.max(initial=0) > MAX_LEN:
        raise FormatError(f"huffman stream: code length {int(lengths.max())} > {MAX_LEN}")
    kraft = sum(2.0 ** -int(n) for n in lengths if n)
    if kraft == 0 or kraft > 1.0:
        raise FormatError(f"huffman stream: code lengths do not form a prefix code "
                          f"(Kraft sum {kraft:g})")
    cnt, symbols = _canonical(lengths)
    a = bitarray(endian="big")
    a.frombytes(bytes(payload))
    try:
        out = np.fromiter(islice(canonical_decode(a, cnt, symbols), count), dtype=dt, count=count)
    except ValueError as e:  # ran out of bits / incomplete code at the end
        raise FormatError(f"huffman stream: payload too short for {count} symbols ({e})") from None
    used = int(lengths[out].astype(np.int64).sum())
    if (used + 7) // 8 != len(payload) or a[used:].any():
        raise FormatError(f"huffman stream: {count} symbols use {used} bits, but the payload "
                          f"has {len(payload)} bytes (or non-zero pad bits)")
    return out


def pack_lengths(lengths: np.ndarray) -> bytes:
    return bitpack.pack(np.asarray(lengths, dtype=np.uint8), LENGTH_BITS)


def unpack_lengths(data: bytes, n_symbols: int) -> np.ndarray:
    return bitpack.unpack(data, LENGTH_BITS, n_symbols).astype(np.uint8)
