"""Deep-Compression tensor encoding ("dc"): sparse index + shared-weight codebook + Huffman.

One tensor becomes one header entry (a small dict) and one bytes section::

    [codebook: k values, dtype cb] [index code lengths] [index stream] [value code lengths] [value stream]

- ``store`` "sparse": the non-zero positions as relative gaps (``lowbit.codec.sparse``), each
  ``ib`` bits, packed (``lowbit.codec.bitpack``) or Huffman coded (``ih``); the values of the
  kept entries only.  "dense": every position has a value (zero needs a codebook slot, added
  if no centroid is exactly 0).
- values: with a codebook (``k > 0``) each value is a codebook index, ``vb`` bits packed or
  Huffman coded (``vh``); without one (``k == 0``, pruned-only) the values are raw ``cb``
  floats.
- Huffman parts carry their code-length table (5 bits per symbol); the length in bytes of the
  index stream is ``il``; the value stream is the rest of the section.

Entry keys: enc="dc", shape, store, n (index entries incl. fillers, or the size for dense),
ib, ih, il, k, cb ("f4"|"f2"), vb, vh.  Decoding returns float32 equal, bit for bit, to the
dense array that was encoded (weights must be exactly representable by the codebook).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.codec import bitpack, huffman, sparse
from lowbit.codec.container import FormatError

_FLOATS = {"f4": np.dtype("<f4"), "f2": np.dtype("<f2")}


@dataclass
class Encoded:
    """An encoded tensor: the header entry, the section bytes, and a size breakdown."""
    entry: dict[str, Any]
    data: bytes
    stats: dict[str, Any]


def _value_bits(k: int) -> int:
    return max(1, int(np.ceil(np.log2(k)))) if k > 1 else 1


def _indices(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of every value in ``codebook`` (exact match required)."""
    order = np.argsort(codebook, kind="stable")
    srt = codebook[order]
    pos = np.clip(np.searchsorted(srt, values), 0, srt.size - 1)
    bad = srt[pos] != values
    if bad.any():
        v = values[bad][0]
        raise ValueError(f"{int(bad.sum())} weights are not in the codebook (e.g. {v!r}); "
                         f"encode the shared weights exactly")
    return order[pos]


def _stream(symbols: np.ndarray, n_symbols: int, bits: int, use_huffman: bool
            ) -> tuple[bytes, bytes]:
    """(code-length table, payload) for one integer stream."""
    if use_huffman:
        h = huffman.encode(symbols, n_symbols)
        return huffman.pack_lengths(h.lengths), h.payload
    return b"", bitpack.pack(symbols, bits)


def encode(weights: np.ndarray, *, codebook: np.ndarray | None = None, index_bits: int = 5,
           huffman_index: bool = False, huffman_values: bool = False, value_dtype: str = "f4",
           store: str = "auto") -> Encoded:
    """Encode a float tensor whose zeros are pruned positions.

    ``codebook``: the shared values (every non-zero weight must be one of them after rounding
    to ``value_dtype``); None stores raw floats (pruning only).  ``store``: "sparse",
    "dense" or "auto" (whichever is smaller; ties go to sparse).
    """
    if value_dtype not in _FLOATS:
        raise ValueError(f"value_dtype: expected one of {sorted(_FLOATS)}, got {value_dtype!r}")
    if store == "auto":
        a = encode(weights, codebook=codebook, index_bits=index_bits, huffman_index=huffman_index,
                   huffman_values=huffman_values, value_dtype=value_dtype, store="sparse")
        b = encode(weights, codebook=codebook, index_bits=index_bits, huffman_index=huffman_index,
                   huffman_values=huffman_values, value_dtype=value_dtype, store="dense")
        return b if len(b.data) < len(a.data) else a
    if store not in ("sparse", "dense"):
        raise ValueError(f"store: expected 'sparse', 'dense' or 'auto', got {store!r}")
    w = np.asarray(weights)
    if w.dtype != np.float32:
        raise ValueError(f"weights: expected float32, got {w.dtype}")
    if not np.isfinite(w).all():
        raise ValueError("weights: NaN or infinity cannot be encoded")
    flat = w.reshape(-1)
    vdt = _FLOATS[value_dtype]
    positions = np.flatnonzero(flat)
    nnz = int(positions.size)
    entry: dict[str, Any] = {"enc": "dc", "shape": list(w.shape), "store": store,
                             "ib": 0, "ih": 0, "il": 0, "k": 0, "cb": value_dtype,
                             "vb": 0, "vh": 0}
    # ---- index
    if store == "sparse":
        gaps = sparse.encode(positions, index_bits)
        ltab, payload = _stream(gaps, 1 << index_bits, index_bits, huffman_index)
        index = ltab + payload
        entry.update(n=int(gaps.size), ib=index_bits, ih=int(huffman_index), il=len(index))
        kept = flat[positions]
    else:
        index = b""
        entry.update(n=int(flat.size))
        kept = flat
    # ---- values
    if codebook is None:
        cb = b""
        vals = kept.astype(vdt)
        if not np.array_equal(vals.astype(np.float32), kept):
            raise ValueError(f"weights are not exactly representable as {value_dtype}")
        values = vals.tobytes()
    else:
        book = np.asarray(codebook, dtype=np.float32).reshape(-1).astype(vdt)
        if book.size == 0:
            raise ValueError("codebook is empty")
        if store == "dense" and (kept == 0).any() and not (book == 0).any():
            book = np.append(book, vdt.type(0))
        idx = _indices(kept, book.astype(np.float32))
        k = int(book.size)
        vb = _value_bits(k)
        ltab, payload = _stream(idx, k, vb, huffman_values)
        values = ltab + payload
        cb = book.tobytes()
        entry.update(k=k, vb=vb, vh=int(huffman_values))
    data = cb + index + values
    stats = {"store": store, "size": int(flat.size), "nnz": nnz,
             "entries": int(entry["n"]) if store == "sparse" else int(flat.size),
             "fillers": int(entry["n"]) - nnz if store == "sparse" else 0,
             "codebook_bytes": len(cb), "index_bytes": len(index), "value_bytes": len(values),
             "bytes": len(data)}
    return Encoded(entry, data, stats)


def _int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def entry_shape(entry: Any) -> tuple:
    """The logical shape of a "dc" entry after checking its fields' types and ranges (cheap:
    nothing is decoded).  Refuses a size above ``lowbit.codec.shapes.MAX_ELEMENTS``."""
    from lowbit.codec.shapes import MAX_ELEMENTS
    if not isinstance(entry, dict):
        raise FormatError("dc entry: expected an object")
    shape = entry.get("shape")
    if not (isinstance(shape, list) and all(_int(s) and s >= 0 for s in shape)):
        raise FormatError(f"dc entry: field 'shape': expected a list of sizes, got "
                          f"{str(shape)[:80]}")
    for key in ("n", "ib", "ih", "il", "k", "vb", "vh"):
        if not (_int(entry.get(key)) and entry[key] >= 0):
            raise FormatError(f"dc entry: field {key!r}: expected an integer >= 0, got "
                              f"{str(entry.get(key))[:40]}")
    if entry["ih"] > 1 or entry["vh"] > 1:
        raise FormatError(f"dc entry: fields 'ih', 'vh' are 0 or 1, got {entry['ih']}, "
                          f"{entry['vh']}")
    if not isinstance(entry.get("cb"), str) or entry["cb"] not in _FLOATS or \
            not isinstance(entry.get("store"), str) or entry["store"] not in ("sparse", "dense"):
        raise FormatError(f"dc entry: bad cb {str(entry.get('cb'))[:20]} / store "
                          f"{str(entry.get('store'))[:20]}")
    size = 1
    for s in shape:
        size *= int(s)
    if size > MAX_ELEMENTS:
        raise FormatError(f"dc entry: shape {shape} has {size} values, more than the "
                          f"{MAX_ELEMENTS} this lowbit allows")
    return tuple(int(s) for s in shape)


def decode(entry: dict[str, Any], data: bytes) -> np.ndarray:
    """Dense float32 tensor from a "dc" entry and its section bytes."""
    shape = entry_shape(entry)
    store, n, k, cbname = entry["store"], int(entry["n"]), int(entry["k"]), entry["cb"]
    ib, ih, il, vb, vh = (int(entry[x]) for x in ("ib", "ih", "il", "vb", "vh"))
    size = int(np.prod(shape, dtype=np.int64))
    vdt = _FLOATS[cbname]
    pos = k * vdt.itemsize
    if pos + il > len(data) or k < 0 or il < 0:
        raise FormatError(f"dc data: codebook ({pos} bytes) + index ({il} bytes) exceed the "
                          f"section ({len(data)} bytes)")
    book = np.frombuffer(data[:pos], dtype=vdt).astype(np.float32)
    if not np.isfinite(book).all():
        raise FormatError("dc data: the codebook contains NaN or inf")
    index, values = data[pos:pos + il], data[pos + il:]
    if store == "sparse":
        if not 1 <= ib <= 16:
            raise FormatError(f"dc entry: index bits {ib} outside 1..16")
        gaps = _read_stream(index, 1 << ib, ib, ih, n, "index")
        positions = sparse.decode(gaps, ib, size)
    else:
        if n != size or il != 0:
            raise FormatError(f"dc entry: dense store with n={n} for {size} weights, il={il}")
        positions = None
    count = size if positions is None else int(positions.size)
    if k == 0:
        if len(values) != count * vdt.itemsize:
            raise FormatError(f"dc data: {count} raw {cbname} values need "
                              f"{count * vdt.itemsize} bytes, got {len(values)}")
        kept = np.frombuffer(values, dtype=vdt).astype(np.float32)
        if not np.isfinite(kept).all():
            raise FormatError("dc data: raw values contain NaN or inf")
    else:
        if vb != _value_bits(k):
            raise FormatError(f"dc entry: value bits {vb} do not match codebook size {k}")
        idx = _read_stream(values, k, vb, vh, count, "values")
        if idx.size and int(idx.max()) >= k:
            raise FormatError(f"dc data: value index {int(idx.max())} >= codebook size {k}")
        kept = book[idx]
    if positions is None:
        return kept.reshape(shape)
    out = np.zeros(size, dtype=np.float32)
    out[positions] = kept
    return out.reshape(shape)


def _read_stream(data: bytes, n_symbols: int, bits: int, use_huffman: int, count: int,
                 what: str) -> np.ndarray:
    try:
        if use_huffman:
            t = bitpack.nbytes(n_symbols, huffman.LENGTH_BITS)
            if len(data) < t:
                raise FormatError(f"code-length table needs {t} bytes, got {len(data)}")
            lengths = huffman.unpack_lengths(data[:t], n_symbols)
            return huffman.decode(lengths, data[t:], count)
        return bitpack.unpack(data, bits, count)
    except FormatError as e:
        raise FormatError(f"dc {what} stream: {e}") from None
