"""Packed weights for the bitwise conv2d / dense kernels (csrc/bconv): ``PackedWeights`` and
the ``prepare_*`` functions that lay weights out once for one kernel (do it at model load).

Weights: (OC, KH, KW, ceil(C/64)) uint64 packed along C per tap; ternary = two such planes
(sign, nonzero mask); unsigned k-bit = (OC, KH, KW, k, ceil(C/64)) planes; dense = the same
with (OC, ceil(K/64)).  Semantics: lowbit.runtime.ref; the maths: csrc/bconv/bconv.h.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lowbit.runtime import ref
from lowbit.runtime.kernels import (_aligned_empty, _check_int, _check_packed, _kernels,
                                    resolve_path)


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


@dataclass(frozen=True, eq=False)
class PackedWeights:
    """Weights laid out once for one kernel (``prepare_*``); pass instead of raw weights.

    kind: 'binary' | 'ternary' | 'planes-binary' | 'planes-planes'; oc, kh, kw, c: output
    channels, kernel, input channels (k for dense, with kh = kw = 1); w_bits: weight planes
    (planes-planes); path / variant: the kernel it was packed for; raw: the original packed
    arrays, kept for the 'ref' path only; tap_sums: int32 (OC*KH*KW) sums of each tap's
    weights, the zero / +1 padding correction (empty when prepared with correction=False);
    w_pop: int32 per-channel popcounts (bit-plane and masked ternary kinds).
    ``nbytes``: the resident bytes: 1 bit per weight (+ the small per-channel tables) for
    every kernel: the word layouts, and avx2 nlut-2x64, whose resident layout is the
    byte-transposed bits (per 64 channels, per K word, per byte: 64 bytes, one per channel);
    its 2-bit nibble layout exists only per L1 cache block in a per-thread scratch, expanded
    at call time (csrc/bconv/nlut_avx2.h, driver.h)."""
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
        """Resident bytes of the kernel layout (+ the small per-channel tables): 1 bit per
        weight on every compiled kernel (avx2 nlut-2x64 included: its nibble layout is
        expanded per cache block at call time, never kept)."""
        return int(self.packed.nbytes + self.tap_sums.nbytes + self.w_pop.nbytes)


# Dense layers (GEMV at batch 1, long K) run the word-panel popcnt kernel on avx2: the nibble
# look-up kernel expands each resident weight byte into two per call (no rows to share that
# with at batch 1), and K > 24 words needs K blocks; measured on Zen 1 (before the 1-bit
# resident nlut layout): 1x4096->4096 0.48 ms vs 0.72, 64x4096->4096 7.4 vs 7.8 ms.
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
