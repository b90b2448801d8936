"""The graph executor: ``Runtime(path, threads=1).predict(images)`` (numpy + kernels, no torch).

Graph (``graph`` of a lowbit model file, written by ``lowbit.train.export``)::

    {"version": 1,
     "input": {"shape": [C, H, W], "dtype": "uint8", "normalization": {"mean", "std", "scale"}},
     "ops": [op, ...]}                              # applied in order to one value

Values are float32 in torch's layout (NCHW / (N, F)) or packed bits (NHWC, channels packed in
uint64 words, ``lowbit.runtime.ops.Bits``).  Ops:

    conv2d / dense / maxpool2d / relu / flatten   the float ops of lowbit.runtime.float_ops
                                                  (maxpool2d on bits = OR; flatten on bits: no-op)
    {"op": "batchnorm", "name", "gamma", "beta", "mean", "var", "eps"}   torch eval BN, exact
    {"op": "sign"}                                float -> bits (x >= 0 -> +1)
    {"op": "qconv2d" | "qdense", "name",
     "in": "sign"|"xnor"|"uint8"|"dorefa"|"dorefa-float"|"float", "a_bits", "w_bits",
     "weight": NAME ("packed" encoding: binary / ternary / planes; or raw float32),
     "w_levels": "binary"|"ternary"|"planes"|"float", "integer_acc": bool,
     "in_channels", "out_channels", "kernel", "stride", "padding", "pad_value",
     "sw": NAME|absent, "sx": float|null|absent, "bias": NAME|absent, "u8": {mean, std}|absent,
     "spatial": bool (dense over packed NHWC bits: a conv whose kernel is the whole input),
     "out": "float" | "bits", "threshold": NAME, "flip": NAME (sign(BN) folded),
     "pool": maxpool op applied to the accumulator before the folded BN, or null}

Deep-Compression files (codebook + sparse index + Huffman, ``"dc"`` tensors) use the float
ops only: their tensors are decoded once, at load, to dense float32 and run through numpy.
"""
from __future__ import annotations

import os
import time

import numpy as np

from lowbit import codec
from lowbit.runtime import float_ops
from lowbit.runtime import bitconv as B
from lowbit.runtime.blas import BlasThreads
from lowbit.runtime.float_ops import _pair
from lowbit.runtime.float_ops import conv2d_float, conv_matrix
from lowbit.runtime.ops import (Bits, QLayer, as_float, bn_affine, bn_apply, fold_float_threshold,
                                maxpool, sign_bits, threshold_bits)

__all__ = ["Runtime"]


def _keep_heap() -> None:
    """Ask glibc to serve large temporaries (activations of a few 100 KB) from the heap instead
    of fresh mmap'd pages: otherwise every op of every call pays page faults (~0.5 ms of a
    2 ms binary VGG-small).  Process-wide; set LOWBIT_MALLOPT=0 to leave malloc alone."""
    if os.environ.get("LOWBIT_MALLOPT", "1") == "0" or not hasattr(os, "sched_getaffinity"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)      # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)     # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


class Runtime:
    """A model file loaded for inference.  ``threads``: kernel threads; ``path`` / ``variant``:
    force a kernel CPU path / micro-kernel (default: the best this CPU runs)."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, kernel: str | None = None,
                 variant: str | None = None):
        _keep_heap()
        self.path = os.fspath(path)
        self.threads = int(threads)
        self.mf = codec.load(self.path)
        self.graph = self.mf.graph
        self.meta = self.mf.meta
        self.ops = list(self.graph.get("ops", []))
        self.layers: dict[str, QLayer] = {}
        self._bn: dict[int, tuple] = {}
        self._bn_sign: dict[int, tuple] = {}
        self._float: dict[str, np.ndarray] = {}
        self._kshape: dict[str, tuple] = {}
        for i, op in enumerate(self.ops):
            kind = op.get("op")
            if kind in ("qconv2d", "qdense"):
                self.layers[op["name"]] = QLayer(op, self.mf, kernel, variant)
            elif kind == "batchnorm":
                stats = tuple(np.asarray(self.mf.tensor(op[k]), np.float32)
                              for k in ("gamma", "beta", "mean", "var"))
                nxt = self.ops[i + 1] if i + 1 < len(self.ops) else {}
                if nxt.get("op") == "sign" or (nxt.get("op") in ("qconv2d", "qdense")
                                               and nxt.get("in") == "sign"):
                    # float BN feeding a sign: exact float32 thresholds, emits packed bits
                    self._bn_sign[i] = fold_float_threshold(*stats, op["eps"])
                self._bn[i] = bn_affine(*stats, op["eps"])
            elif kind in ("conv2d", "dense"):
                for k in ("weight", "bias"):
                    if op.get(k) is not None:
                        t = np.asarray(self.mf.tensor(op[k]), np.float32)
                        if kind == "conv2d" and k == "weight":
                            if t.ndim != 4:
                                raise ValueError(f"{self.path}: graph op {i}: conv2d weight "
                                                 f"{op[k]!r} has shape {t.shape}, expected OIHW")
                            self._kshape[op[k]] = t.shape[2:]
                            t = conv_matrix(t)
                        self._float[op[k]] = t
            elif kind not in ("maxpool2d", "relu", "flatten", "sign"):
                raise ValueError(f"{self.path}: graph op {i}: unknown op {kind!r}")
        norm = self.graph.get("input", {}).get("normalization")
        from lowbit.data import Normalization
        self._table = (Normalization.from_dict(norm, f"{self.path}: input normalization").table()
                       if norm else (np.arange(256, dtype=np.float32) / np.float32(255)))
        # BLAS threads: the kernels' count for all-float graphs; 1 when bitwise kernels run.
        # Their float layers (first / last) are small, and OpenBLAS workers busy-wait for a
        # while after each product, taking the core the kernels' own workers need (measured:
        # binary VGG-small at 2 threads ran slower than at 1 thread that way).
        self._blas_threads = 1 if any(l.kind != "float" for l in self.layers.values()) \
            else self.threads
        # packed sections now live in the kernels' layouts: drop the file's copies
        self.mf.sections.clear()
        self.mf._cache.clear()

    # -- memory -------------------------------------------------------------------------------
    def weight_bytes(self) -> dict[str, int]:
        """Resident weight bytes per quantized layer (kernel layout)."""
        return {n: l.weight_bytes() for n, l in self.layers.items()}

    # -- inference ----------------------------------------------------------------------------
    def _input(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == np.uint8:                     # the look-up table training used
            return self._table[x[:, None] if x.ndim == 3 else x]
        x = x.astype(np.float32, copy=False)
        shape = self.graph.get("input", {}).get("shape")
        if shape is not None and x.ndim == len(shape):
            x = x[:, None]
        return x

    def op_label(self, i: int) -> str:
        """``"NN name"`` (or ``"NN kind"``) of graph op ``i``: the keys of ``profile``."""
        op = self.ops[i]
        return f"{i:02d} {op.get('name') or op['op']}"

    def logits(self, x, record: dict | None = None, profile: dict | None = None) -> np.ndarray:
        """Float32 outputs (N, classes) of uint8 images (N, 28, 28) / (N, 1, 28, 28) (normalised
        with the stored constants) or already-normalised float input.  ``record``: a dict that
        receives every bitwise layer's integer accumulators (torch layout) -- for tests.
        ``profile``: a dict whose ``op_label(i)`` entries accumulate each op's wall seconds
        (``"input"``: the normalisation)."""
        tick = time.perf_counter if profile is not None else None
        if tick:
            t0 = tick()
        v = self._input(x)
        if tick:
            t1 = tick()
            profile["input"] = profile.get("input", 0.0) + (t1 - t0)
        t = self.threads
        with BlasThreads(self._blas_threads):
            for i, op in enumerate(self.ops):
                if tick:
                    t0 = tick()
                    v = self._step(i, op, v, t, record)
                    key = self.op_label(i)
                    profile[key] = profile.get(key, 0.0) + (tick() - t0)
                else:
                    v = self._step(i, op, v, t, record)
            return as_float(v, flat=True)

    def profile_ops(self, x, calls: int = 10) -> list[dict]:
        """Per-op wall time of one ``logits(x)`` call, averaged over ``calls`` calls after one
        warm-up: ``[{"name", "op", "ms"}]`` (the ``layers`` field of a report record)."""
        self.logits(x)
        prof: dict = {}
        for _ in range(max(1, calls)):
            self.logits(x, profile=prof)
        kinds = {self.op_label(i): op["op"] for i, op in enumerate(self.ops)}
        return [{"name": k, "op": kinds.get(k, "normalize"), "ms": 1e3 * s / max(1, calls)}
                for k, s in prof.items()]

    def _step(self, i: int, op: dict, v, t: int, record):
        kind = op["op"]
        if kind in ("qconv2d", "qdense"):
            v = self.layers[op["name"]](v, t, record)
        elif kind == "conv2d":
            w, b = self._float[op["weight"]], self._float.get(op.get("bias"))
            v = conv2d_float(as_float(v), w, self._kshape[op["weight"]], b,
                             _pair(op.get("stride", 1)), _pair(op.get("padding", 0)))
        elif kind == "dense":
            w, b = self._float[op["weight"]], self._float.get(op.get("bias"))
            v = float_ops.dense(as_float(v, flat=True), w, b)
        elif kind == "batchnorm":
            if i in self._bn_sign:
                v = threshold_bits(as_float(v), *self._bn_sign[i], t)
            else:
                v = bn_apply(as_float(v), *self._bn[i])
        elif kind == "maxpool2d":
            v = maxpool(v, op, t)
        elif kind == "relu":
            v = float_ops.relu(as_float(v))
        elif kind == "flatten":
            if not isinstance(v, Bits):
                v = float_ops.flatten(v)
        elif kind == "sign":
            v = sign_bits(as_float(v), t) if not isinstance(v, Bits) else v
        return v

    def predict(self, x, batch: int = 1000) -> np.ndarray:
        """Class indices (int64) of a batch of images."""
        x = np.asarray(x)
        out = [self.logits(x[s:s + batch]).argmax(axis=1) for s in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def run_command(path: str, data: str = "fashion-mnist", threads: int = 1, limit: int | None = None) -> int:
    """``lowbit run FILE --data fashion-mnist``: test accuracy through the runtime."""
    import sys
    import time
    from lowbit.data import DataError
    from lowbit.data import load as load_data
    try:
        rt = Runtime(path, threads)
        images, labels = load_data("test", None if data == "fashion-mnist" else data)
        if limit:
            images, labels = images[:limit], labels[:limit]
        t0 = time.perf_counter()
        pred = rt.predict(images)
        dt = time.perf_counter() - t0
    except (codec.FormatError, DataError, ValueError, KeyError, OSError) as e:
        print(f"lowbit run: error: {e}", file=sys.stderr)
        return 2
    acc = float((pred == labels).mean())
    name = (rt.meta.get("model") or {}).get("name", "model")
    print(f"{path}: {name}: test accuracy {acc:.2%} ({int((pred == labels).sum())}/{labels.size}) "
          f"in {dt:.2f} s, {threads} thread(s), kernels {B.conv_kernel_name()}")
    return 0
