"""IDX files (the MNIST / Fashion-MNIST container), read and written with numpy only.

Layout (big-endian throughout)::

    bytes 0-1   0x00 0x00
    byte  2     dtype code: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
                0x0E float64
    byte  3     rank (number of dimensions)
    4 * rank    the dimensions, uint32 each
    then        prod(dims) items of the dtype, C order, nothing after them

``read_idx`` checks every one of these and raises :class:`DataError` (a ``ValueError``) naming
the file and what was expected against what it found.  Files ending in ``.gz`` are
decompressed; a truncated or corrupt gzip stream is reported the same way.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["DataError", "IDX_DTYPES", "read_idx", "write_idx"]


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or not what the caller expected."""


# IDX dtype code -> numpy dtype (big-endian on disk).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.str[1:]: code for code, dt in IDX_DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({e})") from None


def read_idx(
    path: str | os.PathLike,
    *,
    dtype: str | np.dtype | None = None,
    rank: int | None = None,
    shape: Sequence[int | None] | None = None,
) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a native-endian numpy array.

    Optional expectations are checked after the file itself is validated: ``dtype`` (e.g.
    ``"uint8"``), ``rank``, and ``shape`` where ``None`` entries match any size, e.g.
    ``(None, 28, 28)``.  Any violation raises :class:`DataError`.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: header: expected at least 4 bytes, got {len(raw)}")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path}: magic: expected 0x0000 followed by dtype and rank bytes, "
            f"got 0x{raw[:4].hex()} (not an IDX file)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: dtype code: expected one of {known}, got 0x{code:02X}")
    if ndim == 0:
        raise DataError(f"{path}: rank: expected at least 1, got 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path}: dimensions: expected {ndim} x 4 bytes after the magic, "
            f"got {len(raw) - 4} bytes (truncated header)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dt = IDX_DTYPES[code]
    want = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    got = len(raw) - header
    if got != want:
        what = "truncated" if got < want else "trailing bytes"
        raise DataError(
            f"{path}: data length: expected {want} bytes for dims {dims} of {dt.name}, "
            f"got {got} ({what})")
    arr = np.frombuffer(raw, dt, offset=header).reshape(dims)
    arr = arr.astype(dt.newbyteorder("="), copy=True)  # native order, writable
    _check(path, arr, dtype, rank, shape)
    return arr


def _check(path: Path, arr: np.ndarray, dtype, rank, shape) -> None:
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise DataError(f"{path}: dtype: expected {np.dtype(dtype).name}, got {arr.dtype.name}")
    if rank is not None and arr.ndim != rank:
        raise DataError(f"{path}: rank: expected {rank}, got {arr.ndim} (dims {arr.shape})")
    if shape is not None:
        ok = len(shape) == arr.ndim and all(s is None or s == d for s, d in zip(shape, arr.shape))
        if not ok:
            pretty = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise DataError(f"{path}: dims: expected {pretty}, got {arr.shape}")


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``); returns the path.

    The file is written to a temporary name and renamed, so a crash never leaves half a file.
    """
    path = Path(path)
    arr = np.asarray(array)
    key = arr.dtype.str[1:]  # 'u1', 'i2', 'f4', ... without the byte-order mark
    if key not in _CODE_OF:
        raise DataError(f"{path}: dtype: IDX cannot store {arr.dtype.name}; "
                        f"expected one of uint8, int8, int16, int32, float32, float64")
    if not 1 <= arr.ndim <= 255:
        raise DataError(f"{path}: rank: expected 1..255 dimensions, got {arr.ndim}")
    code = _CODE_OF[key]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(arr, IDX_DTYPES[code]).tobytes()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.suffix == ".gz":
            with gzip.open(tmp, "wb") as f:
                f.write(payload)
        else:
            tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
