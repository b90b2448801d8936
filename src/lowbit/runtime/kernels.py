"""CPU-path selection and the checked Python entry points of the compiled kernels.

Paths, best last: ``ref`` (numpy, lowbit.runtime.ref), ``portable`` (plain C++, any CPU),
``avx2`` (AVX2 + POPCNT), ``avx512`` (AVX512F + AVX512BW + AVX512_VPOPCNTDQ).  The default
is the best one this CPU runs; ``LOWBIT_KERNEL=ref|portable|avx2|avx512`` or ``path=``
forces one, and asking for one the CPU cannot run is an error naming what it lacks.

Every function validates its arguments here (dtype, shape, contiguity, threads) so that bad
input gives a Python error that says which argument and what was expected; the bindings
re-check sizes as a last line of defence.  No torch here (``import lowbit.runtime`` must not
import it).
"""
from __future__ import annotations

import functools
import math
import numbers
import os

import numpy as np

from lowbit.runtime import ref

try:
    from lowbit import _kernels
    _IMPORT_ERROR: Exception | None = None
except ImportError as exc:  # extension not built: only the numpy reference is available
    _kernels = None
    _IMPORT_ERROR = exc

PATHS = ("ref", "portable", "avx2", "avx512")
ENV_VAR = "LOWBIT_KERNEL"

# What each SIMD path needs, as (cpu_features key, name to show when it is missing).
_NEEDS = {
    "avx2": [("popcnt", "POPCNT"), ("avx2_isa", "AVX2"),
             ("os_ymm", "OS support for the YMM register state (XSAVE/XGETBV)")],
    "avx512": [("popcnt", "POPCNT"), ("avx2_isa", "AVX2"),
               ("os_ymm", "OS support for the YMM register state (XSAVE/XGETBV)"),
               ("avx512f", "AVX512F"), ("avx512bw", "AVX512BW"),
               ("avx512vpopcntdq", "AVX512_VPOPCNTDQ"),
               ("os_zmm", "OS support for the ZMM/opmask register state")],
}


class KernelUnavailableError(RuntimeError):
    """A kernel path was asked for that this build or this CPU cannot run."""


def cpu_features() -> dict:
    """CPUID flags that decide the paths (all False when the extension is not built)."""
    if _kernels is None:
        return {}
    return dict(_kernels.cpu_features())


def _missing(path: str) -> list[str]:
    feats = cpu_features()
    return [name for key, name in _NEEDS.get(path, []) if not feats.get(key, False)]


@functools.lru_cache(maxsize=None)     # the build and the CPU do not change in a process
def _unavailable_reason(path: str) -> str | None:
    """None if `path` runs here, else why not (in words)."""
    if path == "ref":
        return None
    if _kernels is None:
        return f"the compiled extension lowbit._kernels is not importable ({_IMPORT_ERROR})"
    if path not in _kernels.compiled_paths():
        return f"this build of lowbit has no '{path}' kernels (not an x86-64 build)"
    if _kernels.path_available(path):
        return None
    missing = _missing(path)
    return "this CPU lacks " + (", ".join(missing) if missing else "a required feature")


def available_paths() -> list[str]:
    """Paths that run on this machine, worst first; always starts with 'ref'."""
    return [p for p in PATHS if _unavailable_reason(p) is None]


def check_path(path: str, source: str = "path") -> str:
    """Return `path` if it runs here; ValueError if unknown, KernelUnavailableError if not."""
    if not isinstance(path, str) or path.strip().lower() not in PATHS:
        raise ValueError(f"{source}={path!r} is not a kernel path; expected one of {', '.join(PATHS)}")
    path = path.strip().lower()
    reason = _unavailable_reason(path)
    if reason is not None:
        raise KernelUnavailableError(
            f"kernel path '{path}' ({source}) cannot run here: {reason}; "
            f"available: {', '.join(available_paths())}")
    return path


def default_path() -> str:
    """$LOWBIT_KERNEL if set (checked), else the best available path."""
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced:
        return check_path(forced, source=f"${ENV_VAR}")
    return available_paths()[-1]


def resolve_path(path: str | None) -> str:
    return default_path() if path is None else check_path(path)


def bgemm_variants(path: str | None = None) -> list[str]:
    """Named micro-kernel variants of bgemm for a compiled path (the first is its default)."""
    if _kernels is None:
        return []
    return [v for p, v in _kernels.bgemm_variants() if path is None or p == path]


def kernel_name(path: str | None = None, variant: str | None = None) -> str:
    """'path/variant' as run by bgemm, e.g. 'avx2/popcnt-2x4' (just 'ref' for numpy)."""
    path = resolve_path(path)
    if path == "ref":
        return "ref"
    return f"{path}/{variant or bgemm_variants(path)[0]}"


# ---- argument checks -------------------------------------------------------------------

def _check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return int(threads)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"k must be a non-negative integer (number of packed values), got {k!r}")
    return int(k)


def _as_native(x: np.ndarray) -> np.ndarray:
    """C-contiguous, native byte order (copies only when needed)."""
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return np.ascontiguousarray(x)


def _check_words(name: str, x, k: int, ndim: int | None = None) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint64 words, got {type(x).__name__}")
    if x.dtype.newbyteorder("=") != np.uint64:
        raise TypeError(f"{name} must have dtype uint64 (packed words from bitpack), got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least one axis, got shape {x.shape}")
    w = ref.words_for(k)
    if x.shape[-1] != w:
        raise ValueError(f"{name} has {x.shape[-1]} words per row, but k={k} needs ceil(k/64)={w}")
    return _as_native(x)


# ---- kernels ---------------------------------------------------------------------------

def bitpack(x, threads: int = 1, path: str | None = None) -> np.ndarray:
    """Signs of x (..., K) -> (..., ceil(K/64)) uint64 (bit 1 = x >= 0; pad bits 0).

    x: float32, float64, int8 or int32 array; NaN is refused."""
    x = np.asarray(x)
    if x.dtype.newbyteorder("=") not in ref.PACK_DTYPES:
        raise TypeError(f"bitpack: x has dtype {x.dtype}; expected one of "
                        f"{', '.join(str(d) for d in ref.PACK_DTYPES)} (convert with x.astype(...))")
    if x.ndim == 0:
        raise ValueError("bitpack: x must have at least one axis (values are packed along the last)")
    threads = _check_threads(threads)
    path = resolve_path(path)
    if path == "ref":
        return ref.bitpack(x)
    k = x.shape[-1]
    lead = x.shape[:-1]
    rows = math.prod(lead)
    x2 = _as_native(x).reshape(rows, k)                            # (rows, K)
    out = np.empty((x2.shape[0], ref.words_for(k)), dtype=np.uint64)  # (rows, W) uint64
    if _kernels.bitpack(x2, out, path, threads):
        first = np.unravel_index(int(np.argmax(np.isnan(x))), x.shape)
        raise ValueError(f"bitpack: x contains NaN (first at index {tuple(int(i) for i in first)}), "
                         "which has no sign")
    return out.reshape(lead + (out.shape[1],))


def unpack(words, k: int, dtype=np.int8, threads: int = 1, path: str | None = None) -> np.ndarray:
    """(..., ceil(k/64)) uint64 -> (..., k) of +1 / -1 as int8 or float32."""
    k = _check_k(k)
    words = _check_words("words", words, k)
    dtype = np.dtype(dtype)
    if dtype not in ref.UNPACK_DTYPES:
        raise TypeError(f"unpack: dtype must be int8 or float32, got {dtype}")
    threads = _check_threads(threads)
    path = resolve_path(path)
    if path == "ref":
        return ref.unpack(words, k, dtype)
    lead = words.shape[:-1]
    w2 = words.reshape(math.prod(lead), words.shape[-1])  # (rows, W) uint64
    out = np.empty((w2.shape[0], k), dtype=dtype)                  # (rows, k)
    _kernels.unpack(w2, out, path, threads)
    return out.reshape(lead + (k,))


def bgemm(a, b, k: int, threads: int = 1, path: str | None = None,
          variant: str | None = None) -> np.ndarray:
    """Packed ±1 matrix product: a (M, W), b (N, W) uint64 -> (M, N) int32,
    out[m, n] = k - 2 * popcount(a[m] XOR b[n]) (= dot of the unpacked ±1 rows).

    Benchmark and test use only (``lowbit bench bgemm``): no model runs through it.  Every
    layer of a model -- dense ones included, as 1x1 convs -- runs on the conv driver
    (csrc/bconv/driver.h, which reuses bgemm's micro-kernels) via ``lowbit.runtime.bitconv``
    or the native executor (csrc/graph).

    The pad bits past k must be 0 in a and b (bitpack guarantees it; checked here)."""
    k = _check_k(k)
    a = _check_words("a", a, k, ndim=2)
    b = _check_words("b", b, k, ndim=2)
    mask = ref.pad_mask(k)
    for name, x in (("a", a), ("b", b)):
        if mask and x.shape[0] and (x[:, -1] & mask).any():
            row = int(np.argmax((x[:, -1] & mask) != 0))
            raise ValueError(f"bgemm: {name}[{row}] has bits set past k={k} (pad bits must be 0; "
                             "was it packed with a different k?)")
    threads = _check_threads(threads)
    path = resolve_path(path)
    if path == "ref":
        if variant:
            raise ValueError("bgemm: variant= applies to compiled paths only, not 'ref'")
        return ref.bgemm(a, b, k)
    if variant is not None and variant not in bgemm_variants(path):
        raise ValueError(f"bgemm: no variant {variant!r} for path '{path}'; "
                         f"expected one of {', '.join(bgemm_variants(path))}")
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)       # (M, N) int32
    _kernels.bgemm(a, b, k, out, path, threads, variant or "")
    return out


def _aligned_empty(n: int, dtype=np.uint64) -> np.ndarray:
    """1-D array of n elements whose data starts on a 64-byte boundary (SIMD loads)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n * itemsize + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + n * itemsize].view(dtype)


def _check_int(name: str, v, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def _check_pair(name: str, v, lo: int) -> tuple[int, int]:
    vals = v if isinstance(v, (tuple, list)) else (v, v)
    if len(vals) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return _check_int(f"{name}[0]", vals[0], lo), _check_int(f"{name}[1]", vals[1], lo)


def _check_packed(name: str, x, ndim: int, k: int, what: str) -> np.ndarray:
    """uint64, `ndim` axes, ceil(k/64) words on the last axis, pad bits 0."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint64 words ({what}), got {type(x).__name__}")
    if x.dtype.newbyteorder("=") != np.uint64:
        raise TypeError(f"{name} must have dtype uint64 ({what}), got {x.dtype}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {what}, got shape {x.shape}")
    w = ref.words_for(k)
    if x.shape[-1] != w:
        raise ValueError(f"{name} has {x.shape[-1]} words on its last axis, but {k} channels "
                         f"need ceil({k}/64)={w}")
    x = _as_native(x)
    mask = ref.pad_mask(k)
    if mask and x.size and (x[..., -1] & mask).any():
        idx = np.unravel_index(int(np.argmax((x[..., -1] & mask) != 0)), x.shape[:-1])
        raise ValueError(f"{name}{list(int(i) for i in idx)} has bits set past channel {k} "
                         "(pad bits must be 0; was it packed with another channel count?)")
    return x
