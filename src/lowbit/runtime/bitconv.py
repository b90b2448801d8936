"""Bitwise conv2d / dense layers with fused output stages (csrc/bconv), checked entry points.

Activations: NHWC, channels packed: (N, H, W, ceil(C/64)) uint64 (bitpack of an NHWC
float array does it), or bit planes (N, H, W, a_bits, ceil(C/64)) (pack_bitplanes).
Weights: (OC, KH, KW, ceil(C/64)) uint64 packed along C per tap; ternary = two such
planes (sign, nonzero mask); unsigned k-bit = (OC, KH, KW, k, ceil(C/64)) planes.
Dense = the same with (M, ceil(K/64)) / (OC, ceil(K/64)).  ``prepare_*`` lays weights out
for a kernel once (do it at model load); every run function also takes raw weights.
Output stages (``out=``): "int32" accumulators, "bits" (threshold=(thr, flip), packed
(..., ceil(OC/64)) uint64, for the next binary layer), "float" (scale, bias).
Semantics: lowbit.runtime.ref (the numpy twins); the maths: csrc/bconv/bconv.h.
"""
from __future__ import annotations

import numpy as np

from lowbit.runtime import ref
from lowbit.runtime.kernels import (_as_native, _check_int, _check_packed, _check_pair,
                                    _check_threads, _kernels, check_path, resolve_path)
from lowbit.runtime.weights import _KIND_CODE, PackedWeights
from lowbit.runtime.weights import (  # noqa: F401  (re-exported: the layer API in one place)
    conv_kernel_name, prepare_binary_conv2d, prepare_binary_dense, prepare_bitplane_conv2d,
    prepare_bitplane_dense, prepare_ternary_conv2d, prepare_ternary_dense, xconv_variants)


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
