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
    rows = int(np.prod(lead, dtype=np.int64))
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
    w2 = words.reshape(int(np.prod(lead, dtype=np.int64)), words.shape[-1])  # (rows, W) uint64
    out = np.empty((w2.shape[0], k), dtype=dtype)                  # (rows, k)
    _kernels.unpack(w2, out, path, threads)
    return out.reshape(lead + (k,))


def bgemm(a, b, k: int, threads: int = 1, path: str | None = None,
          variant: str | None = None) -> np.ndarray:
    """Packed ±1 matrix product: a (M, W), b (N, W) uint64 -> (M, N) int32,
    out[m, n] = k - 2 * popcount(a[m] XOR b[n]) (= dot of the unpacked ±1 rows).

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


# ==== bitwise conv2d / dense with fused output stages (csrc/bconv) ======================
#
# Activations: NHWC, channels packed: (N, H, W, ceil(C/64)) uint64 (bitpack of an NHWC
# float array does it), or bit planes (N, H, W, a_bits, ceil(C/64)) (pack_bitplanes).
# Weights: (OC, KH, KW, ceil(C/64)) uint64 packed along C per tap; ternary = two such
# planes (sign, nonzero mask); unsigned k-bit = (OC, KH, KW, k, ceil(C/64)) planes.
# Dense = the same with (M, ceil(K/64)) / (OC, ceil(K/64)).  ``prepare_*`` lays weights out
# for a kernel once (do it at model load); every run function also takes raw weights.
# Output stages (``out=``): "int32" accumulators, "bits" (threshold=(thr, flip), packed
# (..., ceil(OC/64)) uint64, for the next binary layer), "float" (scale, bias).
# Semantics: lowbit.runtime.ref (the numpy twins); the maths: csrc/bconv/bconv.h.

from dataclasses import dataclass, field  # noqa: E402

_KIND_CODE = {"binary": 0, "ternary": 1, "planes-binary": 2, "planes-planes": 3}


def xconv_variants(path: str | None = None) -> list[str]:
    """Named micro-kernel variants of the conv/dense driver for a path.  The first one not
    named ``masked-*`` is the default of binary and bit-plane layers; ``masked-*`` variants
    (sign/mask word pairs, csrc/bconv/micro_masked.h) serve ternary layers only and the first
    is their default (ternary layers can also run any other variant, as two binary products)."""
    if _kernels is None:
        return []
    return [v for p, v in _kernels.xconv_variants() if path is None or p == path]


def conv_kernel_name(path: str | None = None, variant: str | None = None) -> str:
    """'path/variant' the conv/dense kernels run, e.g. 'avx2/nlut-2x64' ('ref' for numpy)."""
    path = resolve_path(path)
    if path == "ref":
        return "ref"
    return f"{path}/{variant or xconv_variants(path)[0]}"


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


@dataclass(frozen=True, eq=False)
class PackedWeights:
    """Weights laid out once for one kernel (``prepare_*``); pass instead of raw weights.

    kind: 'binary' | 'ternary' | 'planes-binary' | 'planes-planes'; oc, kh, kw, c: output
    channels, kernel, input channels (k for dense, with kh = kw = 1); w_bits: weight planes
    (planes-planes); path / variant: the kernel it was packed for; raw: the original packed
    arrays, kept for the 'ref' path only; tap_sums: int32 (OC*KH*KW) sums of each tap's
    weights, the zero / +1 padding correction (empty when prepared with correction=False);
    w_pop: int32 per-channel popcounts (bit-plane and masked ternary kinds).
    ``nbytes``: the resident bytes: 1 bit per weight for the word layouts (+ the small
    per-channel tables), 2 bits for avx2 nlut-2x64 (one nibble per byte)."""
    kind: str
    oc: int
    kh: int
    kw: int
    c: int
    w_bits: int
    path: str
    variant: str
    raw: tuple
    packed: np.ndarray = field(repr=False)
    tap_sums: np.ndarray = field(repr=False)
    w_pop: np.ndarray = field(repr=False)
    dense: bool = False

    @property
    def kbits(self) -> int:
        """Products per output: KH * KW * C."""
        return self.kh * self.kw * self.c

    @property
    def kernel(self) -> str:
        return self.path if self.path == "ref" else f"{self.path}/{self.variant}"

    @property
    def nbytes(self) -> int:
        """Resident bytes of the kernel layout (+ the small per-channel tables)."""
        return int(self.packed.nbytes + self.tap_sums.nbytes + self.w_pop.nbytes)


# Dense layers (GEMV at batch 1, long K) run the word-panel popcnt kernel on avx2: the nibble
# look-up layout doubles the weight bytes a batch-1 product streams, and K > 24 words needs
# K blocks; measured on Zen 1: 1x4096->4096 0.48 ms vs 0.72, 64x4096->4096 7.4 vs 7.8 ms.
_DENSE_DEFAULT = {"avx2": "popcnt-2x4"}


def _resolve_variant(path: str, variant: str | None, dense: bool = False,
                     ternary: bool = False) -> str:
    if path == "ref":
        if variant:
            raise ValueError("variant= applies to compiled paths only, not 'ref'")
        return ""
    names = xconv_variants(path)
    masked = [v for v in names if v.startswith("masked-")]
    plain = [v for v in names if not v.startswith("masked-")]
    if variant is None:
        if ternary and masked:
            return masked[0]
        if dense and _DENSE_DEFAULT.get(path) in plain:
            return _DENSE_DEFAULT[path]
        return plain[0]
    if variant not in names:
        raise ValueError(f"no conv/dense variant {variant!r} for path '{path}'; expected one of {', '.join(names)}")
    if variant in masked and not ternary:
        raise ValueError(f"variant {variant!r} serves ternary layers only (sign/mask pairs)")
    return variant


def _popcount_rows(words: np.ndarray) -> np.ndarray:
    return ref.popcount(words).sum(axis=-1)


def _prepare(kind, oc, kh, kw, c, w_bits, rows, tap_sums, w_pop, raw, path, variant, dense):
    """rows: (ncols, kh*kw*cw) uint64 B columns (masked variants: (OC, 2*kh*kw*cw), sign row
    then mask row); lays them out for (path, variant)."""
    path = resolve_path(path)
    variant = _resolve_variant(path, variant, dense, kind == "ternary")
    if path != "ref":
        raw = ()                                   # only the numpy reference reads them
    if path == "ref":
        packed = np.zeros(0, np.uint64)
    else:
        rows = np.ascontiguousarray(rows, dtype=np.uint64)
        n, wds = rows.shape
        if variant.startswith("masked-"):
            wds //= 2                                           # (sign, mask) rows
        packed = _aligned_empty(int(_kernels.xconv_packed_words(n, wds, path, variant)))
        if packed.size:
            _kernels.xconv_pack_weights(rows, packed, path, variant)
    return PackedWeights(kind, oc, kh, kw, c, w_bits, path, variant, raw, packed,
                         np.ascontiguousarray(tap_sums, dtype=np.int32).reshape(-1),
                         np.ascontiguousarray(w_pop, dtype=np.int32).reshape(-1), dense)


def _check_c(name: str, c) -> int:
    return _check_int(name, c, 1)


def prepare_binary_conv2d(w, c: int, path: str | None = None, variant: str | None = None,
                          correction: bool = True, _dense: bool = False) -> PackedWeights:
    """±1 weights (OC, KH, KW, ceil(c/64)) uint64 -> PackedWeights for binary_conv2d.

    correction=False drops the per-tap weight sums (4*OC*KH*KW bytes) that pad_value 0 / +1
    need; such weights then run only with pad_value=-1 or no padding (resident weights =
    exactly the packed bits on the word layouts)."""
    c = _check_c("c", c)
    w = _check_packed("w", w, 4, c, "weights (OC, KH, KW, ceil(C/64))")
    oc, kh, kw, cw = w.shape
    if kh < 1 or kw < 1:
        raise ValueError(f"w: kernel must be at least 1x1, got shape {w.shape}")
    # S[oc][tap] = sum of the tap's ±1 weights = 2 popcount - C (padding correction)
    tap_sums = 2 * _popcount_rows(w) - c if correction else np.zeros(0)   # (OC, KH, KW)
    return _prepare("binary", oc, kh, kw, c, 1, w.reshape(oc, kh * kw * cw), tap_sums,
                    np.zeros(0), (w,), path, variant, _dense)


def prepare_ternary_conv2d(w_sign, w_mask, c: int, path: str | None = None,
                           variant: str | None = None, correction: bool = True,
                           _dense: bool = False) -> PackedWeights:
    """Ternary weights as two planes (OC, KH, KW, ceil(c/64)) uint64: sign (bit 1 = +1) and
    nonzero mask (bit 1 = nonzero) -> PackedWeights for ternary_conv2d.  Sign bits where
    the mask is 0 are ignored.  correction: as prepare_binary_conv2d."""
    c = _check_c("c", c)
    s = _check_packed("w_sign", w_sign, 4, c, "sign plane (OC, KH, KW, ceil(C/64))")
    m = _check_packed("w_mask", w_mask, 4, c, "nonzero-mask plane (OC, KH, KW, ceil(C/64))")
    if s.shape != m.shape:
        raise ValueError(f"w_sign and w_mask must have the same shape, got {s.shape} and {m.shape}")
    oc, kh, kw, cw = s.shape
    tap_sums = (2 * _popcount_rows(s & m) - _popcount_rows(m)) if correction else np.zeros(0)
    path = resolve_path(path)
    variant = _resolve_variant(path, variant, _dense, True)
    if variant.startswith("masked-"):   # acc = pop(m) - 2 pop((a ^ s) & m) (micro_masked.h)
        rows = np.concatenate([(s & m).reshape(oc, -1), m.reshape(oc, -1)], axis=1)
        w_pop = _popcount_rows(m.reshape(oc, -1))
        return _prepare("ternary", oc, kh, kw, c, 1, rows, tap_sums, w_pop, (s, m), path,
                        variant, _dense)
    valid = np.full(cw, np.uint64(0xFFFF_FFFF_FFFF_FFFF), dtype=np.uint64)
    if c % 64:
        valid[-1] = np.uint64((1 << (c % 64)) - 1)
    u = (s | ~m) & valid                     # w = (u + v) / 2 (csrc/bconv/bconv.h)
    v = s & m
    rows = np.stack([u, v], axis=1).reshape(2 * oc, kh * kw * cw)   # (u, v) of a channel adjacent
    return _prepare("ternary", oc, kh, kw, c, 1, rows, tap_sums, np.zeros(0), (s, m),
                    path, variant, _dense)


def prepare_bitplane_conv2d(w, c: int, w_bits: int | None = None, path: str | None = None,
                            variant: str | None = None, _dense: bool = False) -> PackedWeights:
    """Weights for bitplane_conv2d: ±1 (OC, KH, KW, ceil(c/64)) when w_bits is None, else
    unsigned w_bits-bit levels as planes (OC, KH, KW, w_bits, ceil(c/64))."""
    c = _check_c("c", c)
    if w_bits is None:
        w = _check_packed("w", w, 4, c, "±1 weights (OC, KH, KW, ceil(C/64))")
        oc, kh, kw, cw = w.shape
        w_pop = _popcount_rows(w.reshape(oc, -1))                            # pop(b) per row
        return _prepare("planes-binary", oc, kh, kw, c, 1, w.reshape(oc, kh * kw * cw),
                        np.zeros(0), w_pop, (w,), path, variant, _dense)
    w_bits = _check_int("w_bits", w_bits, 1)
    if w_bits > 8:
        raise ValueError(f"w_bits must be in 1..8, got {w_bits}")
    w = _check_packed("w", w, 5, c, "weight planes (OC, KH, KW, w_bits, ceil(C/64))")
    oc, kh, kw, wb, cw = w.shape
    if wb != w_bits:
        raise ValueError(f"w has {wb} planes on axis 3, but w_bits={w_bits}")
    planes = np.moveaxis(w, 3, 1).reshape(oc * w_bits, kh * kw * cw)        # col = oc*w_bits + k
    rows = np.concatenate([planes, np.zeros((1, kh * kw * cw), np.uint64)])  # + the zero column
    w_pop = _popcount_rows(planes)                                           # pop(q_k) per (oc, k)
    return _prepare("planes-planes", oc, kh, kw, c, w_bits, rows, np.zeros(0), w_pop, (w,),
                    path, variant, _dense)




def prepare_binary_dense(w, k: int, path=None, variant=None) -> PackedWeights:
    """±1 weights (OC, ceil(k/64)) -> PackedWeights for binary_dense."""
    k = _check_c("k", k)
    w = _check_packed("w", w, 2, k, "weights (OC, ceil(K/64))")
    return prepare_binary_conv2d(w[:, None, None, :], k, path, variant, correction=False, _dense=True)


def prepare_ternary_dense(w_sign, w_mask, k: int, path=None, variant=None) -> PackedWeights:
    k = _check_c("k", k)
    s = _check_packed("w_sign", w_sign, 2, k, "sign plane (OC, ceil(K/64))")
    m = _check_packed("w_mask", w_mask, 2, k, "nonzero-mask plane (OC, ceil(K/64))")
    return prepare_ternary_conv2d(s[:, None, None, :], m[:, None, None, :], k, path, variant,
                                  correction=False, _dense=True)


def prepare_bitplane_dense(w, k: int, w_bits: int | None = None, path=None, variant=None) -> PackedWeights:
    k = _check_c("k", k)
    if w_bits is None:
        w = _check_packed("w", w, 2, k, "±1 weights (OC, ceil(K/64))")
    else:
        w = _check_packed("w", w, 3, k, "weight planes (OC, w_bits, ceil(K/64))")
    return prepare_bitplane_conv2d(w[:, None, None], k, w_bits, path, variant, _dense=True)


def _stage_args(out: str, oc: int, threshold, scale, bias):
    """Validated (stage code, thr, flip, scale, bias) arrays for the binding."""
    e_i32, e_u8, e_f32 = np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.float32)
    if out not in ref.OUT_KINDS:
        raise ValueError(f"out must be one of {', '.join(ref.OUT_KINDS)}, got {out!r}")
    if out != "bits" and threshold is not None:
        raise ValueError(f"threshold= is only used with out='bits' (got out={out!r})")
    if out != "float" and (scale is not None or bias is not None):
        raise ValueError(f"scale= / bias= are only used with out='float' (got out={out!r})")
    if out == "int32":
        return 0, e_i32, e_u8, e_f32, e_f32
    if out == "bits":
        if threshold is None or not isinstance(threshold, (tuple, list)) or len(threshold) != 2:
            raise ValueError("out='bits' needs threshold=(thr, flip), e.g. from fold_bn_threshold")
        thr = np.asarray(threshold[0])
        flip = np.asarray(threshold[1])
        if thr.shape != (oc,) or flip.shape != (oc,):
            raise ValueError(f"threshold: thr and flip must have shape ({oc},) (one per output "
                             f"channel), got {thr.shape} and {flip.shape}")
        if thr.dtype.kind not in "iu":
            raise TypeError(f"threshold: thr must hold integers, got dtype {thr.dtype}")
        if thr.dtype != np.int32 and thr.size and (thr.min() < ref.INT32_MIN or thr.max() > (1 << 31) - 1):
            raise ValueError("threshold: thr must fit in int32")
        if flip.dtype != np.bool_ and not (flip.dtype.kind in "iu" and int(flip.max(initial=0)) <= 1
                                           and int(flip.min(initial=0)) >= 0):
            raise ValueError("threshold: flip must be bool or 0/1")
        return (1, np.ascontiguousarray(thr, dtype=np.int32),
                np.ascontiguousarray(flip.astype(np.uint8)), e_f32, e_f32)
    if scale is None:
        raise ValueError("out='float' needs scale= (one float per output channel; bias= optional)")
    sc = np.ascontiguousarray(np.asarray(scale, dtype=np.float32))
    if sc.shape != (oc,):
        raise ValueError(f"scale must have shape ({oc},), got {sc.shape}")
    bi = e_f32
    if bias is not None:
        bi = np.ascontiguousarray(np.asarray(bias, dtype=np.float32))
        if bi.shape != (oc,):
            raise ValueError(f"bias must have shape ({oc},), got {bi.shape}")
    return 2, e_i32, e_u8, sc, bi


def _out_array(stage: int, rows_shape: tuple, oc: int) -> np.ndarray:
    if stage == 0:
        return np.empty(rows_shape + (oc,), dtype=np.int32)
    if stage == 1:
        return np.empty(rows_shape + (ref.words_for(oc),), dtype=np.uint64)
    return np.empty(rows_shape + (oc,), dtype=np.float32)


def _take_prepared(w, kind: str, dense: bool, path, variant) -> PackedWeights | None:
    if not isinstance(w, PackedWeights):
        return None
    if w.kind != kind:
        raise ValueError(f"weights were prepared for a '{w.kind}' layer, not '{kind}'")
    if w.dense != dense:
        raise ValueError(f"weights were prepared for a {'dense' if w.dense else 'conv2d'} layer")
    if path is not None and check_path(path) != w.path:
        raise ValueError(f"weights were prepared for path '{w.path}', but path={path!r} was asked "
                         "(prepare them again for that path)")
    if variant is not None and variant != w.variant:
        raise ValueError(f"weights were prepared for variant '{w.variant}', not {variant!r}")
    return w


def _run(pw: PackedWeights, x5: np.ndarray, stride, padding, pad_value, out, threshold, scale,
         bias, threads) -> np.ndarray:
    """x5 (N, H, W, planes, cw) -> output (N, OH, OW, ...) via the compiled driver."""
    sh, sw = stride
    ph, pw_ = padding
    n, h, wd = x5.shape[:3]
    if h + 2 * ph < pw.kh or wd + 2 * pw_ < pw.kw:
        raise ValueError(f"kernel {pw.kh}x{pw.kw} is larger than the padded input "
                         f"{h + 2 * ph}x{wd + 2 * pw_}")
    oh = ref.conv_output_size(h, pw.kh, sh, ph)
    ow = ref.conv_output_size(wd, pw.kw, sw, pw_)
    stage, thr, flip, sc, bi = _stage_args(out, pw.oc, threshold, scale, bias)
    res = _out_array(stage, (n, oh, ow), pw.oc)
    a_bits = x5.shape[3]
    kind = 4 if pw.variant.startswith("masked-") else _KIND_CODE[pw.kind]
    tap_sums = pw.tap_sums
    if pw.kind in ("binary", "ternary") and (pad_value == -1 or (ph == 0 and pw_ == 0)):
        tap_sums = np.zeros(0, np.int32)                   # no correction needed
    elif pw.kind in ("binary", "ternary") and tap_sums.size == 0:
        raise ValueError(f"pad_value={pad_value} with padding needs the padding correction, but "
                         "the weights were prepared with correction=False")
    _kernels.xconv2d(x5, pw.packed, [pw.kh, pw.kw, sh, sw, ph, pw_], kind, pw.oc,
                     pw.kbits, a_bits, pw.w_bits, tap_sums, int(pad_value), pw.w_pop, stage,
                     res, thr, flip, sc, bi, pw.path, pw.variant, threads)
    return res


def _conv_common(x, pw: PackedWeights, planes: int | None, stride, padding, pad_value, threads):
    """Validate x against prepared weights -> (x5, stride, padding, pad_value, threads)."""
    if planes is None:
        x = _check_packed("x", x, 4, pw.c, "activations (N, H, W, ceil(C/64))")
        x5 = x[:, :, :, None, :]
    else:
        x = _check_packed("x", x, 5, pw.c, "activation planes (N, H, W, a_bits, ceil(C/64))")
        if not 1 <= x.shape[3] <= 8:
            raise ValueError(f"x: a_bits (axis 3) must be in 1..8, got {x.shape[3]}")
        x5 = x
    stride = _check_pair("stride", stride, 1)
    padding = _check_pair("padding", padding, 0)
    if pad_value not in (-1, 0, 1) or isinstance(pad_value, bool):
        raise ValueError(f"pad_value must be -1, 0 or +1 (the ±1 value of padded taps; 0 = "
                         f"torch zero padding), got {pad_value!r}")
    return x5, stride, padding, pad_value, _check_threads(threads)


def binary_conv2d(x, w, c: int | None = None, stride=1, padding=0, pad_value: int = 0,
                  out: str = "int32", threshold=None, scale=None, bias=None, threads: int = 1,
                  path: str | None = None, variant: str | None = None) -> np.ndarray:
    """±1 conv2d on packed NHWC activations, XNOR-popcount.

    x: (N, H, W, ceil(c/64)) uint64 (bit 1 = +1, pad bits 0); w: (OC, KH, KW, ceil(c/64))
    uint64 or PackedWeights from prepare_binary_conv2d (then c may be omitted); stride,
    padding: int or (h, w); pad_value: the value of out-of-image activations: 0 (default)
    = torch's F.conv2d zero padding, exact through a per-border correction; -1 = padding
    with the bit 0 (lowbit's QuantConv2d default for binary inputs), free; +1 also exact.
    Returns (N, OH, OW, OC) int32 acc = the exact ±1 dot products (out='int32'),
    (N, OH, OW, ceil(OC/64)) uint64 bits (out='bits', threshold=(thr, flip): bit =
    acc <= thr if flip else acc >= thr), or float32 acc*scale+bias (out='float')."""
    pw = _take_prepared(w, "binary", False, path, variant)
    if pw is None:
        if c is None:
            raise ValueError("binary_conv2d: c (number of input channels) is required with raw weights")
        pw = prepare_binary_conv2d(w, c, path, variant)
    elif c is not None and c != pw.c:
        raise ValueError(f"c={c} but the weights were prepared for c={pw.c}")
    x5, stride, padding, pad_value, threads = _conv_common(x, pw, None, stride, padding, pad_value, threads)
    if pw.path == "ref":
        _stage_args(out, pw.oc, threshold, scale, bias)
        return ref.binary_conv2d(x5[:, :, :, 0], pw.raw[0], pw.c, stride, padding, pad_value, out,
                                 threshold, scale, bias)
    return _run(pw, x5, stride, padding, pad_value, out, threshold, scale, bias, threads)


def ternary_conv2d(x, w_sign, w_mask=None, c: int | None = None, stride=1, padding=0,
                   pad_value: int = 0, out: str = "int32", threshold=None, scale=None, bias=None,
                   threads: int = 1, path: str | None = None, variant: str | None = None) -> np.ndarray:
    """±1 activations x (N, H, W, ceil(c/64)) by ternary weights: w_sign, w_mask planes
    (OC, KH, KW, ceil(c/64)) or w_sign = PackedWeights from prepare_ternary_conv2d.
    acc = sum over nonzero weights of (±1)(±1); padding, stages: binary_conv2d."""
    pw = _take_prepared(w_sign, "ternary", False, path, variant)
    if pw is None:
        if c is None or w_mask is None:
            raise ValueError("ternary_conv2d: w_mask and c are required with raw weights")
        pw = prepare_ternary_conv2d(w_sign, w_mask, c, path, variant)
    x5, stride, padding, pad_value, threads = _conv_common(x, pw, None, stride, padding, pad_value, threads)
    if pw.path == "ref":
        _stage_args(out, pw.oc, threshold, scale, bias)
        return ref.ternary_conv2d(x5[:, :, :, 0], pw.raw[0], pw.raw[1], pw.c, stride, padding,
                                  pad_value, out, threshold, scale, bias)
    return _run(pw, x5, stride, padding, pad_value, out, threshold, scale, bias, threads)


def bitplane_conv2d(x_planes, w, c: int | None = None, w_bits: int | None = None, stride=1,
                    padding=0, out: str = "int32", threshold=None, scale=None, bias=None,
                    threads: int = 1, path: str | None = None, variant: str | None = None) -> np.ndarray:
    """Unsigned a_bits-bit activations as bit planes x_planes (N, H, W, a_bits, ceil(c/64))
    (pack_bitplanes) by ±1 weights (w_bits None: BNN first layer from 8-bit pixels,
    Algorithm 4; DoReFa 1-bit weights) or unsigned w_bits-bit weights as planes (OC, KH, KW,
    w_bits, ceil(c/64)) (DoReFa k-bit x m-bit), or PackedWeights from prepare_bitplane_conv2d.
    acc = sum of level products; zero padding (level 0), exact; stages: binary_conv2d."""
    kind = "planes-binary" if (w_bits is None and not (isinstance(w, PackedWeights) and w.kind == "planes-planes")) else "planes-planes"
    pw = _take_prepared(w, kind, False, path, variant)
    if pw is None:
        if c is None:
            raise ValueError("bitplane_conv2d: c is required with raw weights")
        pw = prepare_bitplane_conv2d(w, c, w_bits, path, variant)
    x5, stride, padding, _, threads = _conv_common(x_planes, pw, True, stride, padding, 0, threads)
    _check_plane_range(pw, x5.shape[3])
    if pw.path == "ref":
        _stage_args(out, pw.oc, threshold, scale, bias)
        return ref.bitplane_conv2d(x5, pw.raw[0], pw.c, None if pw.kind == "planes-binary" else pw.w_bits,
                                   stride, padding, out, threshold, scale, bias)
    return _run(pw, x5, stride, padding, 0, out, threshold, scale, bias, threads)


def _check_plane_range(pw: PackedWeights, a_bits: int) -> None:
    wmax = 1 if pw.kind == "planes-binary" else (1 << pw.w_bits) - 1
    if ((1 << a_bits) - 1) * wmax * pw.kbits >= (1 << 31):
        raise ValueError(f"accumulators could overflow int32: {a_bits}-bit activations x "
                         f"{'±1' if wmax == 1 else f'{pw.w_bits}-bit'} weights over {pw.kbits} products")


def binary_dense(x, w, k: int | None = None, out: str = "int32", threshold=None, scale=None,
                 bias=None, threads: int = 1, path: str | None = None,
                 variant: str | None = None) -> np.ndarray:
    """±1 dense: x (M, ceil(k/64)) by w (OC, ceil(k/64)) or PackedWeights -> (M, OC) int32
    x @ w.T (or the bits / float stage, see binary_conv2d).  bgemm with fused output stages."""
    pw = _take_prepared(w, "binary", True, path, variant)
    if pw is None:
        if k is None:
            raise ValueError("binary_dense: k is required with raw weights")
        pw = prepare_binary_dense(w, k, path, variant)
    x = _check_packed("x", x, 2, pw.c, "activations (M, ceil(K/64))")
    threads = _check_threads(threads)
    if pw.path == "ref":
        _stage_args(out, pw.oc, threshold, scale, bias)
        return ref.binary_dense(x, pw.raw[0][:, 0, 0], pw.c, out, threshold, scale, bias)
    return _run(pw, x[:, None, None, None, :], (1, 1), (0, 0), -1, out, threshold, scale, bias, threads)[:, 0, 0]


def ternary_dense(x, w_sign, w_mask=None, k: int | None = None, out: str = "int32",
                  threshold=None, scale=None, bias=None, threads: int = 1,
                  path: str | None = None, variant: str | None = None) -> np.ndarray:
    """±1 x (M, ceil(k/64)) by ternary (sign, mask) planes (OC, ceil(k/64)) -> (M, OC)."""
    pw = _take_prepared(w_sign, "ternary", True, path, variant)
    if pw is None:
        if k is None or w_mask is None:
            raise ValueError("ternary_dense: w_mask and k are required with raw weights")
        pw = prepare_ternary_dense(w_sign, w_mask, k, path, variant)
    x = _check_packed("x", x, 2, pw.c, "activations (M, ceil(K/64))")
    threads = _check_threads(threads)
    if pw.path == "ref":
        _stage_args(out, pw.oc, threshold, scale, bias)
        return ref.ternary_dense(x, pw.raw[0][:, 0, 0], pw.raw[1][:, 0, 0], pw.c, out, threshold, scale, bias)
    return _run(pw, x[:, None, None, None, :], (1, 1), (0, 0), -1, out, threshold, scale, bias, threads)[:, 0, 0]


def bitplane_dense(x_planes, w, k: int | None = None, w_bits: int | None = None,
                   out: str = "int32", threshold=None, scale=None, bias=None, threads: int = 1,
                   path: str | None = None, variant: str | None = None) -> np.ndarray:
    """Unsigned activations as planes x_planes (M, a_bits, ceil(k/64)) by ±1 w (OC,
    ceil(k/64)) or unsigned planes (OC, w_bits, ceil(k/64)) -> (M, OC)."""
    kind = "planes-binary" if (w_bits is None and not (isinstance(w, PackedWeights) and w.kind == "planes-planes")) else "planes-planes"
    pw = _take_prepared(w, kind, True, path, variant)
    if pw is None:
        if k is None:
            raise ValueError("bitplane_dense: k is required with raw weights")
        pw = prepare_bitplane_dense(w, k, w_bits, path, variant)
    x = _check_packed("x_planes", x_planes, 3, pw.c, "activation planes (M, a_bits, ceil(K/64))")
    if not 1 <= x.shape[1] <= 8:
        raise ValueError(f"x_planes: a_bits (axis 1) must be in 1..8, got {x.shape[1]}")
    _check_plane_range(pw, x.shape[1])
    threads = _check_threads(threads)
    if pw.path == "ref":
        _stage_args(out, pw.oc, threshold, scale, bias)
        wr = pw.raw[0][:, 0, 0]
        return ref.bitplane_dense(x, wr, pw.c, None if pw.kind == "planes-binary" else pw.w_bits,
                                  out, threshold, scale, bias)
    return _run(pw, x[:, None, None, :, :], (1, 1), (0, 0), 0, out, threshold, scale, bias, threads)[:, 0, 0]


def pack_bitplanes(x, bits: int, threads: int = 1, path: str | None = None) -> np.ndarray:
    """Unsigned levels x (..., K) (uint8, or any integer dtype with 0 <= x < 2^bits) ->
    bit planes (..., bits, ceil(K/64)) uint64, plane n = bit n (pad bits 0).  For NHWC
    pixels (N, H, W, C) this gives bitplane_conv2d's (N, H, W, bits, ceil(C/64))."""
    bits = _check_int("bits", bits, 1)
    if bits > 8:
        raise ValueError(f"pack_bitplanes: bits must be in 1..8, got {bits}")
    x = np.asarray(x)
    if x.dtype.kind not in "iub":
        raise TypeError(f"pack_bitplanes: x must hold unsigned integer levels, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError("pack_bitplanes: x must have at least one axis (levels are packed along the last)")
    if x.size and (x.min() < 0 or x.max() >= (1 << bits)):
        raise ValueError(f"pack_bitplanes: levels must be in [0, {1 << bits}) for bits={bits}, "
                         f"got [{x.min()}, {x.max()}]")
    threads = _check_threads(threads)
    path = resolve_path(path)
    if path == "ref":
        return ref.pack_bitplanes(x, bits)
    k = x.shape[-1]
    lead = x.shape[:-1]
    x2 = np.ascontiguousarray(x.astype(np.uint8, copy=False)).reshape(-1, k)   # (rows, K) uint8
    out = np.empty((x2.shape[0], bits, ref.words_for(k)), dtype=np.uint64)
    _kernels.pack_bitplanes(x2, out, bits, path, threads)
    return out.reshape(lead + (bits, ref.words_for(k)))


def binary_maxpool2d(x, kernel, stride=None, padding=0, threads: int = 1,
                     path: str | None = None) -> np.ndarray:
    """Max pooling of ±1 activations on packed NHWC words x (N, H, W, Cw): OR of the window's
    words (max of ±1 = +1 iff any bit is 1).  stride defaults to kernel; padding <= kernel/2,
    out-of-image taps ignored (as torch's max_pool2d).  One C++ loop serves every compiled
    path (a memory-bound OR)."""
    if not isinstance(x, np.ndarray) or x.dtype.newbyteorder("=") != np.uint64 or x.ndim != 4:
        raise TypeError(f"binary_maxpool2d: x must be a 4-D uint64 array (N, H, W, Cw), got "
                        f"{type(x).__name__} {getattr(x, 'dtype', '')} {getattr(x, 'shape', '')}")
    kh, kw = _check_pair("kernel", kernel, 1)
    sh, sw = _check_pair("stride", kernel if stride is None else stride, 1)
    ph, pw = _check_pair("padding", padding, 0)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"padding {ph, pw} must be at most half the kernel {kh, kw}")
    n, h, w, cw = x.shape
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w + 2 * pw}")
    threads = _check_threads(threads)
    path = resolve_path(path)
    if path == "ref":
        return ref.binary_maxpool2d(x, (kh, kw), (sh, sw), (ph, pw))
    x = _as_native(x)
    out = np.empty((n, ref.conv_output_size(h, kh, sh, ph), ref.conv_output_size(w, kw, sw, pw), cw),
                   dtype=np.uint64)
    _kernels.binary_maxpool2d(x, out, [kh, kw, sh, sw, ph, pw], threads)
    return out


fold_threshold = ref.fold_threshold
fold_bn_threshold = ref.fold_bn_threshold
bn_eval_fn = ref.bn_eval_fn
