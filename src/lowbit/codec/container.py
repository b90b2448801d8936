"""The lowbit model-file container: a versioned, checksummed bag of named sections.

Every model file of the project is one of these.  The container knows nothing about models:
it stores a JSON header (a dict the caller fills: graph, tensor encodings, metadata) and named
sections (numpy arrays or raw bytes).  ``lowbit.codec.model`` builds model files on top of it.

On-disk layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"LOWBITMF"
    8       4     format version (uint32, currently 1)
    12      4     flags (uint32): bit 0 = the header is zlib-deflated; other bits 0
    16      8     total file length in bytes (uint64)
    24      8     header length in bytes (uint64), as stored
    32      4     CRC32 of the stored header bytes
    36      24    reserved, zero
    60      4     CRC32 of bytes 0..59 (the preamble)
    64      ...   header: JSON, UTF-8 (zlib-deflated when that is smaller, flag bit 0),
                  zero padded to a multiple of 64; its end is the start of the data area
    ...           sections, each starting on a 64-byte boundary, zero padded after it

The JSON header is ``{"meta": <caller's header>, "sections": [...]}`` where each section
entry is ``{"name", "offset", "nbytes", "crc32", "kind": "array"|"bytes"}`` and arrays add
``"dtype"`` (little-endian numpy dtype string) and ``"shape"``; ``offset`` counts from the
start of the data area.  Sections are listed in file order, contiguous except for the zero
padding, and the last one ends at ``total length`` (the file ends on a 64-byte boundary).
Deflating the header matters for small files (a Deep-Compression LeNet is ~25-45 KB, and its
header would otherwise be ~5% of it); ``python -c "import lowbit.codec.container as c;
print(c.read_header(PATH))"`` prints it either way.  A reader checks every byte: preamble CRC, header CRC,
each section's CRC, that every padding byte is zero and that the file is exactly
``total length`` long; so flipping any byte or truncating the file anywhere is refused with a
``FormatError`` naming the file and the part that is wrong.

Files are written atomically: a temporary file in the target directory, ``fsync``, then
``os.replace`` (and an fsync of the directory where the OS allows it).

Versioning: ``VERSION`` is the version this code writes; ``READABLE_VERSIONS`` the versions it
can read.  A newer file is refused with "upgrade lowbit", an older unsupported one with
"re-create it"; never a silent misread.
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zlib
from typing import Any, Mapping

import numpy as np

MAGIC = b"LOWBITMF"
VERSION = 1
READABLE_VERSIONS = (1,)
ALIGN = 64
PREAMBLE = 64
FLAG_DEFLATED = 1
_PRE = struct.Struct("<8sIIQQI24sI")  # magic, version, flags, total, hlen, hcrc, reserved, pcrc
assert _PRE.size == PREAMBLE

# dtypes a section array may have: plain numeric / bool, no objects, no structured records
_KINDS = "biufc"


class FormatError(ValueError):
    """A model file is corrupt, truncated, of an unknown version, or not a lowbit file."""


def _pad(n: int) -> int:
    return (-n) % ALIGN


def _crc(data: bytes | memoryview | np.ndarray) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _as_section(name: str, value: Any) -> tuple[dict[str, Any], memoryview]:
    if not isinstance(name, str) or not name:
        raise ValueError(f"section names must be non-empty strings, got {name!r}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = memoryview(value).cast("B")
        return {"name": name, "kind": "bytes"}, data
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _KINDS or value.dtype.fields is not None:
            raise ValueError(f"section {name!r}: dtype {value.dtype} cannot be stored "
                             f"(numeric or bool arrays only)")
        dt = value.dtype.newbyteorder("<")
        arr = np.ascontiguousarray(value, dtype=dt)
        entry = {"name": name, "kind": "array", "dtype": arr.dtype.str,
                 "shape": [int(s) for s in arr.shape]}
        return entry, memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
    raise TypeError(f"section {name!r}: expected a numpy array or bytes, got {type(value).__name__}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"header value of type {type(o).__name__} is not JSON-serialisable")


def encode(header: Mapping[str, Any], sections: Mapping[str, Any]) -> bytes:
    """Serialise to the bytes that ``save`` writes (useful for size accounting and tests)."""
    entries: list[dict[str, Any]] = []
    datas: list[memoryview] = []
    for name, value in sections.items():
        entry, data = _as_section(name, value)
        entry["nbytes"] = data.nbytes
        entry["crc32"] = _crc(data)
        entries.append(entry)
        datas.append(data)
    off = 0  # offsets count from the start of the data area (after the padded header)
    for entry in entries:
        entry["offset"] = off
        off += entry["nbytes"] + _pad(entry["nbytes"])
    doc = {"meta": dict(header), "sections": entries}
    try:
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False, default=_json_default,
                          ensure_ascii=False).encode("utf-8")
    except ValueError as e:  # NaN / inf in the header
        raise ValueError(f"header cannot be written as JSON: {e}") from None
    flags = 0
    packed = zlib.compress(text, 9)
    if len(packed) + _pad(len(packed)) < len(text) + _pad(len(text)):
        text, flags = packed, FLAG_DEFLATED
    base = PREAMBLE + len(text) + _pad(len(text))
    total = base + off
    pre = _PRE.pack(MAGIC, VERSION, flags, total, len(text), _crc(text), b"\0" * 24, 0)
    pre = pre[:-4] + struct.pack("<I", _crc(pre[:-4]))
    out = bytearray(total)
    out[:PREAMBLE] = pre
    out[PREAMBLE:PREAMBLE + len(text)] = text
    for entry, data in zip(entries, datas):
        out[base + entry["offset"]:base + entry["offset"] + entry["nbytes"]] = data
    return bytes(out)


def save(path: str | os.PathLike, header: Mapping[str, Any], sections: Mapping[str, Any]) -> int:
    """Write ``header`` (a JSON-able dict) and ``sections`` ({name: ndarray | bytes}) to
    ``path`` atomically; return the number of bytes written."""
    blob = encode(header, sections)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not every OS / filesystem allows opening a dir
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return len(blob)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_container(path: str | os.PathLike) -> bool:
    """True when ``path`` starts with the lowbit magic (cheap; checks nothing else)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return False


def _aligned_buffer(n: int) -> np.ndarray:
    """A writable uint8 buffer of ``n`` bytes whose first byte is 64-byte aligned, so that
    every section (at a 64-byte offset) is aligned in memory too."""
    raw = np.empty(n + ALIGN, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    return raw[start:start + n]


def _check_preamble(where: str, pre: bytes, size: int) -> tuple[int, int, int, int]:
    if len(pre) < PREAMBLE and MAGIC.startswith(bytes(pre[:len(MAGIC)])):
        raise FormatError(f"{where}: truncated: {size} bytes, the preamble alone is {PREAMBLE}")
    if pre[:len(MAGIC)] != MAGIC:
        raise FormatError(f"{where}: not a lowbit model file (magic: expected {MAGIC!r}, "
                          f"got {bytes(pre[:len(MAGIC)])!r})")
    if len(pre) < PREAMBLE:
        raise FormatError(f"{where}: truncated: {size} bytes, the preamble alone is {PREAMBLE}")
    magic, version, flags, total, hlen, hcrc, reserved, pcrc = _PRE.unpack(pre[:PREAMBLE])
    got = _crc(pre[:PREAMBLE - 4])
    if got != pcrc:
        raise FormatError(f"{where}: preamble: CRC32 mismatch (stored {pcrc:08x}, "
                          f"computed {got:08x}); the file is corrupt")
    if version not in READABLE_VERSIONS:
        if version > max(READABLE_VERSIONS):
            raise FormatError(f"{where}: format version {version} is newer than this lowbit "
                              f"reads (versions {list(READABLE_VERSIONS)}); upgrade lowbit")
        raise FormatError(f"{where}: format version {version} is older than this lowbit reads "
                          f"(versions {list(READABLE_VERSIONS)}); re-create the file")
    if flags & ~FLAG_DEFLATED or reserved != b"\0" * 24:
        raise FormatError(f"{where}: preamble: unknown flags {flags:#x} or non-zero reserved "
                          f"bytes (this lowbit knows flag {FLAG_DEFLATED:#x} only)")
    if total != size:
        kind = "truncated" if size < total else "has trailing bytes"
        raise FormatError(f"{where}: {kind}: total length: expected {total} bytes, got {size}")
    if PREAMBLE + hlen + _pad(hlen) > total:
        raise FormatError(f"{where}: header length {hlen} runs past the end of the file")
    return version, flags, hlen, hcrc


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(v: Any, n: int = 120) -> str:
    """repr of a header value for an error message, cut to ``n`` characters."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def _check_zero(where: str, buf: np.ndarray, lo: int, hi: int, what: str) -> None:
    if hi > lo and buf[lo:hi].any():
        raise FormatError(f"{where}: {what}: padding bytes {lo}..{hi - 1} are not zero; "
                          f"the file is corrupt")


def _parse_header(where: str, buf: np.ndarray, flags: int, hlen: int, hcrc: int
                  ) -> dict[str, Any]:
    text = buf[PREAMBLE:PREAMBLE + hlen]
    got = _crc(text)
    if got != hcrc:
        raise FormatError(f"{where}: header: CRC32 mismatch (stored {hcrc:08x}, computed "
                          f"{got:08x}); the file is corrupt")
    _check_zero(where, buf, PREAMBLE + hlen, PREAMBLE + hlen + _pad(hlen), "header")
    try:
        raw = zlib.decompress(bytes(text)) if flags & FLAG_DEFLATED else bytes(text)
        doc = json.loads(raw.decode("utf-8"))
    except zlib.error as e:
        raise FormatError(f"{where}: header: deflate stream is corrupt ({e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{where}: header: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict) \
            or not isinstance(doc.get("sections"), list):
        raise FormatError(f"{where}: header: expected keys 'meta' (object) and 'sections' (list)")
    return doc


def _read_section(where: str, buf: np.ndarray, entry: Any, pos: int, base: int
                  ) -> tuple[str, Any, int]:
    name, kind = entry.get("name"), entry.get("kind")
    rel, nbytes, crc = (entry.get(k) for k in ("offset", "nbytes", "crc32"))
    if not (isinstance(name, str) and name and isinstance(kind, str)
            and all(_is_int(v) for v in (rel, nbytes, crc))):
        raise FormatError(f"{where}: header: malformed section entry {_short(entry)} (expected "
                          f"'name' and 'kind' strings, 'offset', 'nbytes', 'crc32' integers)")
    off = base + rel
    if off != pos or nbytes < 0 or off + nbytes + _pad(nbytes) > buf.size:
        raise FormatError(f"{where}: section {name!r}: offset {rel} / size {nbytes} do not fit "
                          f"the file (expected offset {pos - base}, data area is "
                          f"{buf.size - base} bytes)")
    data = buf[off:off + nbytes]
    got = _crc(data)
    if got != crc:
        raise FormatError(f"{where}: section {name!r}: CRC32 mismatch (stored {crc:08x}, "
                          f"computed {got:08x}); the file is corrupt")
    _check_zero(where, buf, off + nbytes, off + nbytes + _pad(nbytes), f"section {name!r}")
    if kind == "bytes":
        return name, data.tobytes(), off + nbytes + _pad(nbytes)
    if kind != "array":
        raise FormatError(f"{where}: section {name!r}: unknown kind {kind!r} "
                          f"(expected 'array' or 'bytes')")
    shape = entry.get("shape")
    if not (isinstance(shape, list) and all(_is_int(s) and s >= 0 for s in shape)):
        raise FormatError(f"{where}: section {name!r}: bad shape {_short(shape)} (expected a "
                          f"list of sizes)")
    shape = tuple(shape)
    try:
        dt = np.dtype(entry.get("dtype")) if isinstance(entry.get("dtype"), str) else None
    except (TypeError, ValueError, SyntaxError):
        dt = None
    if dt is None or dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
        raise FormatError(f"{where}: section {name!r}: unsupported dtype "
                          f"{_short(entry.get('dtype'))} (numeric or bool arrays only)")
    count = math.prod(shape)            # exact: no int64 wrap-around for absurd shapes
    if math.prod(max(v, 1) for v in shape) * dt.itemsize >= 1 << 62:
        raise FormatError(f"{where}: section {name!r}: shape {list(shape)} is too large for "
                          f"an array")
    if count * dt.itemsize != nbytes:
        raise FormatError(f"{where}: section {name!r}: {dt} {list(shape)} needs "
                          f"{count * dt.itemsize} bytes, the section has {nbytes}")
    arr = data.view(dt).reshape(shape) if nbytes else np.zeros(shape, dtype=dt)
    return name, arr, off + nbytes + _pad(nbytes)


def decode(blob: bytes | bytearray | np.ndarray, where: str = "<bytes>"
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse and verify container bytes; see ``load``."""
    if isinstance(blob, np.ndarray):
        buf = blob.reshape(-1).view(np.uint8)
    else:
        buf = _aligned_buffer(len(blob))
        buf[:] = np.frombuffer(blob, dtype=np.uint8)
    version, flags, hlen, hcrc = _check_preamble(where, bytes(buf[:PREAMBLE]), buf.size)
    doc = _parse_header(where, buf, flags, hlen, hcrc)
    sections: dict[str, Any] = {}
    base = pos = PREAMBLE + hlen + _pad(hlen)
    for entry in doc["sections"]:
        if not isinstance(entry, dict):
            raise FormatError(f"{where}: header: malformed section entry {entry!r}")
        name, value, pos = _read_section(where, buf, entry, pos, base)
        if name in sections:
            raise FormatError(f"{where}: section {name!r} appears twice")
        sections[name] = value
    if pos != buf.size:
        raise FormatError(f"{where}: {buf.size - pos} bytes after the last section are not "
                          f"described by the header")
    return doc["meta"], sections


def load(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and verify ``path``; return ``(header, sections)``.

    Arrays come back as writable numpy arrays sharing one 64-byte-aligned buffer (each section
    starts aligned); raw-bytes sections as ``bytes``.  Raises ``FormatError`` (naming the file
    and the part) for a corrupt, truncated, foreign or unknown-version file.
    """
    where = os.fspath(path)
    with open(where, "rb") as f:
        head = f.read(PREAMBLE)
        size = os.fstat(f.fileno()).st_size
        _check_preamble(where, head, size)
        buf = _aligned_buffer(size)
        buf[:len(head)] = np.frombuffer(head, dtype=np.uint8)
        n = f.readinto(memoryview(buf[len(head):]))
        if n != size - len(head):
            raise FormatError(f"{where}: truncated while reading: expected {size} bytes, "
                              f"got {len(head) + (n or 0)}")
    return decode(buf, where)


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Only the (verified) JSON header of ``path``, without reading the sections."""
    where = os.fspath(path)
    with open(where, "rb") as f:
        head = f.read(PREAMBLE)
        size = os.fstat(f.fileno()).st_size
        _, flags, hlen, hcrc = _check_preamble(where, head, size)
        rest = f.read(hlen + _pad(hlen))
    buf = np.frombuffer(head + rest, dtype=np.uint8)
    return _parse_header(where, buf, flags, hlen, hcrc)["meta"]
