"""Runtime ops on two kinds of values (numpy + lowbit._kernels, no torch).

- float: float32 arrays in torch's layout, NCHW or (N, F);
- :class:`Bits`: ±1 activations packed NHWC along C, words (N, H, W, ceil(C/64)) uint64.

:class:`QLayer` runs one quantized conv / dense layer of the graph (``lowbit.runtime.graph``)
exactly as ``lowbit.train.layers`` defines it: input levels and scales, an exact integer
accumulator from the bitwise kernels (binary XNOR-popcount, bit-plane AND-popcount), then
either the float stage ``y = ((acc * sw) * sx) * K + bias`` or the folded sign(BatchNorm)
threshold stage that emits packed bits.  Layers with float activations (BWN, TWN, DoReFa with
> 8-bit inputs) and float weights run in numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.runtime import float_ops
from lowbit.runtime.float_ops import conv2d_float
from lowbit.runtime import bitconv as B
from lowbit.runtime import kernels as K
from lowbit.codec.fold import (bn_affine, bn_apply, batchnorm,  # noqa: F401
                               fold_float_threshold)

F32 = np.float32


@dataclass
class Bits:
    words: np.ndarray     # (N, H, W, ceil(c/64)) uint64
    c: int

    def to_float(self) -> np.ndarray:
        """±1 float32 NCHW (or (N, C) when H = W = 1 and flat)."""
        v = K.unpack(self.words, self.c, np.float32)          # (N, H, W, C)
        return np.ascontiguousarray(v.transpose(0, 3, 1, 2))


def as_float(v, flat: bool = False) -> np.ndarray:
    x = v.to_float() if isinstance(v, Bits) else v
    return x.reshape(x.shape[0], -1) if flat else x


def _pack_signs(x: np.ndarray, threads: int) -> np.ndarray:
    """K.bitpack, except that NaN packs as -1 (NaN >= 0 is false), as torch's
    ``where(x >= 0, 1, -1)`` and the native executor have it; the kernel itself refuses NaN."""
    try:
        return K.bitpack(x, threads)
    except ValueError:
        if not np.isnan(x).any():
            raise
        return K.bitpack(np.where(np.isnan(x), x.dtype.type(-1), x), threads)


def sign_bits(x: np.ndarray, threads: int = 1) -> Bits:
    """float NCHW / (N, F) -> packed signs (x >= 0 -> +1; NaN -> -1)."""
    if x.ndim == 2:
        return Bits(_pack_signs(x, threads)[:, None, None, :], x.shape[1])
    return Bits(_pack_signs(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), threads), x.shape[1])


def threshold_bits(x: np.ndarray, t: np.ndarray, s: np.ndarray, threads: int = 1) -> Bits:
    """Bits of s * (x - t) >= 0 per channel (axis 1) of float NCHW / (N, F)."""
    view = (1, -1) + (1,) * (x.ndim - 2)
    with np.errstate(over="ignore", invalid="ignore"):
        z = x - t.reshape(view)
        if (s < 0).any():
            z *= s.reshape(view)
    return sign_bits(z, threads)


def maxpool(v, op: dict, threads: int = 1):
    if isinstance(v, Bits):   # max of ±1 = OR of bits
        return Bits(_pool_bits(v.words, op, threads), v.c)
    return float_ops.maxpool2d(v, op.get("kernel", 2), op.get("stride"))


def _pool_bits(words: np.ndarray, op: dict, threads: int = 1, path: str | None = None) -> np.ndarray:
    """OR max-pool (no padding) of packed words: bitconv.binary_maxpool2d."""
    return B.binary_maxpool2d(words, op["kernel"], op.get("stride") or op["kernel"], 0, threads, path)


def _ones_planes(oc_shape, c: int) -> np.ndarray:
    """±1 weights that are all +1: (1, KH, KW, ceil(c/64)), pad bits 0."""
    return K.bitpack(np.ones(tuple(oc_shape) + (c,), np.float32))


def _avgpool_sum(a: np.ndarray, k, stride, padding) -> np.ndarray:
    """avg_pool2d(count_include_pad=True) of (N, 1, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = k, stride, padding
    if ph or pw:
        a = np.pad(a, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return (win.sum(axis=(4, 5), dtype=F32) / F32(kh * kw)).astype(F32)


class QLayer:
    """One ``qconv2d`` / ``qdense`` op, weights laid out once for its kernel."""

    def __init__(self, op: dict, mf, path=None, variant=None):
        tensor = mf.tensor                   # decoded dense value; sections: the packed words
        self.op, self.name = op, op["name"]
        self.conv = op["op"] == "qconv2d"
        self.spatial = bool(op.get("spatial"))
        self.mode, self.a_bits = op["in"], int(op["a_bits"])
        self.c, self.oc = int(op["in_channels"]), int(op["out_channels"])
        self.kernel, self.stride = tuple(op["kernel"]), tuple(op["stride"])
        self.padding, self.pad_value = tuple(op["padding"]), int(op["pad_value"])
        self.flat_dense = not self.conv and not self.spatial
        get = lambda n: None if op.get(n) is None else np.asarray(tensor(op[n]))
        self.sw, self.bias = get("sw"), get("bias")
        self.sx = None if op.get("sx") is None else F32(op["sx"])
        self.out = op["out"]
        if self.out == "bits":
            self.thr, self.flip = get("threshold").astype(np.int32), get("flip").astype(np.uint8)
            fm = np.zeros(K.ref.words_for(self.oc) * 64, bool)
            fm[:self.oc] = self.flip.astype(bool)
            self.flip_words = K.bitpack(np.where(fm, 1.0, -1.0).astype(F32)[:self.oc]) \
                if self.flip.any() else None
        wl = op["w_levels"]
        binary_in = self.mode in ("sign", "xnor")
        planes_in = self.mode in ("uint8", "dorefa") and self.a_bits <= 8
        lay = dict(path=path, variant=variant)
        if binary_in and wl in ("binary", "ternary"):
            self.kind = wl
        elif planes_in and wl == "binary":
            self.kind = "planes-binary"
        elif planes_in and wl == "planes" and int(op["w_bits"]) <= 8:
            self.kind = "planes-planes"
        else:
            self.kind = "float"
        corr = self.pad_value != -1 and any(self.padding)
        w = mf.sections[op["weight"]] if self.kind != "float" else None
        fd = self.flat_dense
        if self.kind == "binary":
            self.pw = (B.prepare_binary_dense(w[:, 0, 0], self.c, **lay) if fd else
                       B.prepare_binary_conv2d(w, self.c, correction=corr, **lay))
        elif self.kind == "ternary":
            self.pw = (B.prepare_ternary_dense(w[0][:, 0, 0], w[1][:, 0, 0], self.c, **lay) if fd
                       else B.prepare_ternary_conv2d(w[0], w[1], self.c, correction=corr, **lay))
        elif self.kind == "planes-binary":
            self.pw = (B.prepare_bitplane_dense(w[:, 0, 0], self.c, **lay) if fd else
                       B.prepare_bitplane_conv2d(w, self.c, **lay))
        elif self.kind == "planes-planes":
            e = mf.entries[op["weight"]]
            self.step, self.offset, wb = int(e["step"]), int(e["offset"]), int(e["bits"])
            ones = _ones_planes((1,) + self.kernel, self.c)
            if fd:
                self.pw = B.prepare_bitplane_dense(w[:, 0, 0], self.c, wb, **lay)
                self.pw_ones = B.prepare_bitplane_dense(ones[:, 0, 0], self.c, **lay)
            else:
                self.pw = B.prepare_bitplane_conv2d(w, self.c, wb, **lay)
                self.pw_ones = B.prepare_bitplane_conv2d(ones, self.c, **lay)
        else:
            lv = np.asarray(tensor(op["weight"]), F32)      # (OC, KH, KW, C) levels or float
            # conv: the (KH*KW*C, OC) matrix of conv2d_float; dense: (OC, F)
            self.w_float = np.ascontiguousarray(
                lv.reshape(lv.shape[0], -1).T if self.conv else lv.reshape(lv.shape[0], -1))
        self.integer_acc = bool(op["integer_acc"])

    # -- sizes --------------------------------------------------------------------------------
    def weight_bytes(self) -> int:
        """Resident bytes of this layer's weights in the runtime."""
        if self.kind == "float":
            return self.w_float.nbytes
        return self.pw.nbytes + (self.pw_ones.nbytes if self.kind == "planes-planes" else 0)

    # -- forward ------------------------------------------------------------------------------
    def _levels(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "uint8":
            u = self.op["u8"]
            return np.clip(np.round((x * F32(u["std"]) + F32(u["mean"])) * F32(255.0)), 0, 255)
        return np.round(np.clip(x, 0, 1) * F32(2 ** self.a_bits - 1))

    def _operand(self, v, threads):
        """The quantized input in the layout of self.kind, and the XNOR factor K (or None)."""
        kfac = None
        if self.kind == "float" or self.mode == "xnor" or self.kind.startswith("planes"):
            x = as_float(v, flat=self.flat_dense)
            if x.ndim == 2 and not self.flat_dense:
                x = x.reshape((x.shape[0], self.c) + self.kernel)          # spatial dense
            if self.mode == "xnor":
                a = np.abs(x)
                kfac = (a.mean(axis=1, keepdims=True, dtype=F32) if x.ndim == 2 else
                        _avgpool_sum(a.mean(axis=1, keepdims=True, dtype=F32), self.kernel,
                                     self.stride, self.padding))
            if self.kind == "float":
                if self.mode in ("sign", "xnor"):
                    return np.where(x >= 0, F32(1), F32(-1)), kfac
                if self.mode in ("uint8", "dorefa"):
                    return self._levels(x), kfac
                if self.mode == "dorefa-float":
                    return np.clip(x, F32(0), F32(1)), kfac
                return x, kfac
            if self.kind.startswith("planes"):
                lv = self._levels(x).astype(np.uint8)
                lv = lv if lv.ndim == 2 else np.ascontiguousarray(lv.transpose(0, 2, 3, 1))
                return B.pack_bitplanes(lv, self.a_bits, threads), kfac
            v = x
        if isinstance(v, Bits):
            words = v.words
            if self.flat_dense:
                if words.shape[1:3] != (1, 1):
                    return self._operand(v.to_float(), threads)
                words = words[:, 0, 0]
            return words, kfac
        if v.ndim == 2 and not self.flat_dense:   # spatial dense reading a flattened float value
            v = v.reshape((v.shape[0], self.c) + self.kernel)            # torch's (C, H, W) order
        b = sign_bits(v, threads)
        return (b.words[:, 0, 0] if self.flat_dense else b.words), kfac

    def _kernel(self, xq, out, threads, **stage):
        """The layer on the kernels through bitconv's checked entry points (the one path into
        the compiled driver; the native executor calls the same driver from C++)."""
        kw = dict(out=out, threads=threads, **stage)
        if not self.flat_dense:
            kw.update(stride=self.stride, padding=self.padding)
        if self.kind == "binary":
            return (B.binary_dense(xq, self.pw, **kw) if self.flat_dense else
                    B.binary_conv2d(xq, self.pw, pad_value=self.pad_value, **kw))
        if self.kind == "ternary":
            return (B.ternary_dense(xq, self.pw, **kw) if self.flat_dense else
                    B.ternary_conv2d(xq, self.pw, pad_value=self.pad_value, **kw))
        fn = B.bitplane_dense if self.flat_dense else B.bitplane_conv2d
        if self.kind == "planes-binary":
            return fn(xq, self.pw, **kw)
        a1 = fn(xq, self.pw, out="int32", **{k: v for k, v in kw.items() if k != "out"})
        a2 = fn(xq, self.pw_ones, out="int32", **{k: v for k, v in kw.items() if k != "out"})
        return self.step * a1 + self.offset * a2               # acc of Wl = step * u + offset

    def _float_acc(self, xq: np.ndarray) -> np.ndarray:
        if not self.conv:
            return float_ops.dense(xq.reshape(xq.shape[0], -1), self.w_float)
        return conv2d_float(xq, self.w_float, self.kernel, None, self.stride, self.padding,
                            self.pad_value)

    @staticmethod
    def _torch_layout(acc: np.ndarray) -> np.ndarray:
        """(N, OH, OW, OC) or (N, OC) -> NCHW / (N, OC); dense (N, 1, 1, OC) -> (N, OC)."""
        if acc.ndim == 2:
            return acc
        if acc.shape[1:3] == (1, 1) and acc.ndim == 4:
            return acc[:, 0, 0]
        return np.ascontiguousarray(acc.transpose(0, 3, 1, 2))

    def __call__(self, v, threads: int = 1, record: dict | None = None):
        xq, kfac = self._operand(v, threads)
        if self.kind != "float" and self.out == "bits":
            if record is not None:
                record[self.name] = self._torch_layout(self._kernel(xq, "int32", threads))
            bits = self._kernel(xq, "bits", threads, threshold=(self.thr, self.flip))
            if bits.ndim == 2:
                bits = bits[:, None, None, :]
            p = self.op.get("pool")
            if p is not None:   # pool of acc before BN: OR for increasing, AND for decreasing channels
                if self.flip_words is not None:
                    bits = bits ^ self.flip_words
                bits = _pool_bits(bits, p, threads, self.pw.path)
                if self.flip_words is not None:
                    bits = bits ^ self.flip_words
            return Bits(bits, self.oc)
        if self.kind == "float":
            acc = self._float_acc(xq)
            if self.integer_acc:
                acc = np.round(acc)
            if not self.conv and acc.ndim == 4:
                acc = acc[:, :, 0, 0]
        else:
            acc = self._torch_layout(self._kernel(xq, "int32", threads))
            if record is not None:
                record[self.name] = acc
            acc = acc.astype(F32)
        view = (1, -1) + (1,) * (acc.ndim - 2)
        y = acc
        if self.sw is not None:
            y = y * (self.sw.reshape(view) if self.sw.ndim else self.sw)
        if self.sx is not None:
            y = y * self.sx
        if kfac is not None:
            y = y * kfac
        if self.bias is not None:
            y = y + self.bias.reshape(view)
        y = y.astype(F32, copy=False)
        if self.out == "bits":   # float layer feeding a folded BN (not produced by export)
            raise ValueError(f"{self.name}: a float layer cannot have a threshold stage")
        return y
