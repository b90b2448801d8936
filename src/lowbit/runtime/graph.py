"""The graph runtime: ``Runtime(path, threads=1).predict(images)`` (numpy + kernels, no torch).

Two executors run a planned graph.  ``executor="native"`` (the default whenever the
compiled extension runs every op, i.e. for any graph lowbit writes, on every compiled CPU
path): one C++ call per batch runs the whole graph in one planned arena
(csrc/graph/executor.h, built by ``lowbit.runtime.native``).  ``executor="python"``: the
op-by-op numpy + kernel-call executor below, the living spec the native one is tested
against; it is also what runs on the ``ref`` path (numpy reference kernels).
``LOWBIT_EXECUTOR=python|native`` sets the default.

The graph (``lowbit.codec.graph``: version 2, a DAG of named values; version-1 chains are
upgraded at load) is checked once at load, then planned: each op's weights are laid out for
its kernel, BatchNorms feeding only signs become float thresholds, and every value is freed
after its last reader.  Values are float32 in torch's layout (NCHW / (N, F)) or packed bits
(NHWC, channels packed in uint64 words, ``lowbit.runtime.ops.Bits``).

    conv2d / dense / pools / upsample / relu / hardtanh / prelu / act_quant / flatten /
    add / concat      the float ops of lowbit.runtime.float_ops (maxpool2d on bits = OR,
                      flatten on bits: no-op; the others take bits as ±1 floats)
    batchnorm         torch eval BN, exact (to bits directly when only signs read it)
    sign              float -> bits (x >= 0 -> +1)
    qconv2d / qdense  a quantized layer (``lowbit.runtime.ops.QLayer``): input levels, exact
                      integer accumulators on the bitwise kernels, float or folded-bits output

Deep-Compression files (codebook + sparse index + Huffman, ``"dc"`` tensors) use the float
ops only: their tensors are decoded once, at load, to dense float32 and run through numpy.
"""
from __future__ import annotations

import os
import time

import numpy as np

from lowbit import codec
from lowbit.runtime import float_ops
from lowbit.runtime.blas import BlasThreads
from lowbit.runtime.float_ops import _pair
from lowbit.runtime.float_ops import conv2d_float, conv_matrix
from lowbit.runtime.inputs import check_input
# imported with the module, not at the first load: compiling it (no .pyc when bytecode
# writing is off) takes ~1.8 MiB for a moment, which at load time adds to the process's peak RSS
from lowbit.runtime.native import NativeGraph, NotNative
from lowbit.runtime.ops import (Bits, QLayer, as_float, bn_affine, bn_apply, fold_float_threshold,
                                maxpool, sign_bits, threshold_bits)

__all__ = ["Runtime"]

_QLAYERS = ("qconv2d", "qdense")
_UNARY_FLOAT = ("avgpool2d", "global_avgpool", "upsample", "relu", "hardtanh", "act_quant")


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


def _sign_reader(op: dict) -> bool:
    return op["op"] == "sign" or (op["op"] in _QLAYERS and op["in"] == "sign")


class Runtime:
    """A model file loaded for inference.  ``threads``: kernel threads; ``kernel`` /
    ``variant``: force a kernel CPU path / micro-kernel (default: the best this CPU runs)."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, kernel: str | None = None,
                 variant: str | None = None, executor: str | None = None):
        executor = executor or os.environ.get("LOWBIT_EXECUTOR", "").strip().lower() or None
        if executor not in (None, "native", "python"):
            raise ValueError(f"executor: expected 'native' or 'python', got {executor!r}")
        _keep_heap()
        self.path = os.fspath(path)
        self.threads = int(threads)
        if self.threads < 1:
            raise ValueError(f"threads: expected a positive integer, got {threads!r}")
        self.mf = codec.load(self.path)
        self.graph = codec.graph.parse(self.mf.graph, f"{self.path}: graph", self.mf.entries)
        self.shapes = codec.shapes.infer(self.graph, self.mf.tensor_shape, f"{self.path}: graph")
        self._flat = {v for v, s in self.shapes.items() if len(s) == 1}   # (N, F) values
        self.meta = self.mf.meta
        self.ops = self.graph["ops"]
        self.inputs, self.outputs = self.graph["inputs"], self.graph["outputs"]
        if len(self.inputs) != 1:
            raise ValueError(f"{self.path}: graph has {len(self.inputs)} inputs; this runtime "
                             f"runs single-input graphs")
        self._forced = (kernel, variant)
        self.layers: dict[str, QLayer] = {}
        self._bn: dict[int, tuple] = {}
        self._bn_sign: dict[int, tuple] = {}
        self._float: dict[str, np.ndarray] = {}
        self._kshape: dict[str, tuple] = {}
        readers = codec.graph.consumers(self.graph)
        for i, op in enumerate(self.ops):
            self._plan(i, op, readers)
        free = self._lifetimes(readers)
        self._schedule = [(i, op, tuple(op["inputs"]), op["outputs"][0], tuple(free[i]))
                          for i, op in enumerate(self.ops)]
        spec = self.inputs[0]
        shape = spec.get("shape") or [1]
        self._channels = shape[0] if len(shape) == 3 else 1
        self._table = np.ascontiguousarray(
            float_ops.input_tables(spec.get("normalization"), self._channels))   # (C, 256)
        # BLAS threads: the kernels' count for all-float graphs; 1 when bitwise kernels run.
        # Their float layers (first / last) are small, and OpenBLAS workers busy-wait for a
        # while after each product, taking the core the kernels' own workers need (measured:
        # binary VGG-small at 2 threads ran slower than at 1 thread that way).
        self._blas_threads = 1 if any(l.kind != "float" for l in self.layers.values()) \
            else self.threads
        # packed sections now live in the kernels' layouts: drop the file's copies
        self.mf.sections.clear()
        self.mf._cache.clear()
        self._in_shape = tuple(self.inputs[0].get("shape") or ())
        self.native = self._native(kernel, executor)
        self.executor = "native" if self.native is not None else "python"

    def _native(self, kernel, executor):
        """The native executor, or None for the Python one (asked for, the ``ref`` path, or
        an op the native executor lacks; asking for "native" then is an error)."""
        from lowbit.runtime import kernels as K
        if executor == "python":
            return None
        path = K.resolve_path(kernel)
        try:
            if path == "ref":
                raise NotNative("the 'ref' kernel path is the numpy reference (Python executor)")
            return NativeGraph(self, path)
        except NotNative as e:
            if executor == "native":
                raise ValueError(f"{self.path}: the native executor cannot run this graph: {e}") from None
            return None

    # -- planning -----------------------------------------------------------------------------
    def _tensor(self, name: str) -> np.ndarray:
        return np.asarray(self.mf.tensor(name), np.float32)

    def _plan(self, i: int, op: dict, readers: dict) -> None:
        kind = op["op"]
        where = f"{self.path}: graph op {i} ({kind})"
        if kind in _QLAYERS:
            self.layers[op["name"]] = QLayer(op, self.mf, *self._forced)
        elif kind == "batchnorm":
            stats = tuple(self._tensor(op[k]) for k in ("gamma", "beta", "mean", "var"))
            users = [u for u in readers.get(op["outputs"][0], [])]
            if users and all(u >= 0 and _sign_reader(self.ops[u]) for u in users):
                # float BN read only by signs: exact float32 thresholds, emits packed bits
                self._bn_sign[i] = fold_float_threshold(*stats, op["eps"])
            self._bn[i] = bn_affine(*stats, op["eps"])
        elif kind in ("conv2d", "dense"):
            for k in ("weight", "bias"):
                if op.get(k) is not None:
                    t = self._tensor(op[k])
                    if kind == "conv2d" and k == "weight":
                        if t.ndim != 4:
                            raise ValueError(f"{where}: weight {op[k]!r} has shape {t.shape}, "
                                             f"expected OIHW")
                        self._kshape[op[k]] = t.shape[2:]
                        t = conv_matrix(t)
                    self._float[op[k]] = t
        elif kind == "prelu":
            self._float[op["weight"]] = self._tensor(op["weight"])

    def _lifetimes(self, readers: dict) -> list[list[str]]:
        """For each op, the values no later op reads (freed after it runs)."""
        last: dict[str, int] = {}
        for v, users in readers.items():
            if -1 not in users:                                    # graph outputs stay
                last[v] = max(users)
        free: list[list[str]] = [[] for _ in self.ops]
        for v, i in last.items():
            free[i].append(v)
        return free

    # -- memory -------------------------------------------------------------------------------
    def weight_bytes(self) -> dict[str, int]:
        """Resident weight bytes per quantized layer (kernel layout)."""
        return {n: l.weight_bytes() for n, l in self.layers.items()}

    # -- inference ----------------------------------------------------------------------------
    def _input(self, x, normalized: bool = False) -> np.ndarray:
        """The float32 NCHW input of the graph, from uint8 pixels (the default: through the
        stored normalisation tables) or, with ``normalized=True``, from float input already
        normalised as in training.  Refuses anything else (``lowbit.runtime.inputs``)."""
        x = check_input(x, self.inputs[0], normalized, self.path)
        if normalized:
            return x
        if x.shape[1] == 1:
            return self._table[0][x]                                # one table look-up
        out = np.empty(x.shape, np.float32)
        for c in range(x.shape[1]):
            out[:, c] = self._table[c][x[:, c]]
        return out

    _poison = False     # tests: fill every freed arena buffer with 0xFF between native ops

    def op_label(self, i: int) -> str:
        """``"NN name"`` (or ``"NN kind"``) of graph op ``i``: the keys of ``profile``."""
        op = self.ops[i]
        return f"{i:02d} {op.get('name') or op['op']}"

    def _forward(self, x, record, profile, normalized) -> dict:
        """The graph outputs' values as computed (float arrays or Bits)."""
        if self.native is not None:
            t0 = time.perf_counter() if profile is not None else 0.0
            if not (normalized and type(x) is np.ndarray and x.dtype == np.float32
                    and x.shape[1:] == self._in_shape and x.flags.c_contiguous):
                x = check_input(x, self.inputs[0], normalized, self.path)
            # (normalised float32 of the right shape: NaN / inf are refused by the native
            # input op, which reads every value anyway)
            if profile is not None:      # "input": the check and the native input op
                profile["input"] = profile.get("input", 0.0) + (time.perf_counter() - t0)
            return self.native.run(x, profile, record, poison=self._poison)
        tick = time.perf_counter if profile is not None else None
        if tick:
            t0 = tick()
        vals = {self.inputs[0]["name"]: self._input(x, normalized)}
        if tick:
            profile["input"] = profile.get("input", 0.0) + (tick() - t0)
        t, step = self.threads, self._step
        with BlasThreads(self._blas_threads):
            if tick is None:
                for i, op, ins, out, free in self._schedule:
                    vals[out] = step(i, op, [vals[v] for v in ins], t, record)
                    for v in free:
                        del vals[v]
                return vals
            for i, op, ins, out, free in self._schedule:
                t0 = tick()
                vals[out] = step(i, op, [vals[v] for v in ins], t, record)
                key = self.op_label(i)
                profile[key] = profile.get(key, 0.0) + (tick() - t0)
                for v in free:
                    del vals[v]
        return vals

    def run(self, x, record: dict | None = None, profile: dict | None = None,
            normalized: bool = False) -> dict:
        """Every graph output of uint8 images (N, H, W) / (N, C, H, W) (normalised with the
        stored constants) or already-normalised float input (``normalized=True``):
        ``{value: float32 array}`` in torch's layout.  ``record``: a dict that receives every
        bitwise layer's integer accumulators (torch layout) -- for tests.  ``profile``: a dict
        whose ``op_label(i)`` entries accumulate each op's wall seconds (``"input"``: the
        normalisation)."""
        vals = self._forward(x, record, profile, normalized)
        return {v: as_float(vals[v], flat=v in self._flat) for v in self.outputs}

    def logits(self, x, record: dict | None = None, profile: dict | None = None,
               normalized: bool = False) -> np.ndarray:
        """The first graph output as float32 (N, F) (see ``run``)."""
        return as_float(self._forward(x, record, profile, normalized)[self.outputs[0]], flat=True)

    def profile_ops(self, x, calls: int = 10, normalized: bool = False) -> list[dict]:
        """Per-op wall time of one ``logits(x)`` call, averaged over ``calls`` calls after one
        warm-up: ``[{"name", "op", "ms"}]`` (the ``layers`` field of a report record)."""
        self.logits(x, normalized=normalized)
        prof: dict = {}
        for _ in range(max(1, calls)):
            self.logits(x, profile=prof, normalized=normalized)
        kinds = {self.op_label(i): op["op"] for i, op in enumerate(self.ops)}
        return [{"name": k, "op": kinds.get(k, "normalize"), "ms": 1e3 * s / max(1, calls)}
                for k, s in prof.items()]

    def _step(self, i: int, op: dict, xs: list, t: int, record):
        kind = op["op"]
        v = xs[0]
        if kind in _QLAYERS:
            return self.layers[op["name"]](v, t, record)
        if kind == "conv2d":
            w, b = self._float[op["weight"]], self._float.get(op.get("bias"))
            return conv2d_float(as_float(v), w, self._kshape[op["weight"]], b,
                                _pair(op.get("stride", 1)), _pair(op.get("padding", 0)))
        if kind == "dense":
            w, b = self._float[op["weight"]], self._float.get(op.get("bias"))
            return float_ops.dense(as_float(v, flat=True), w, b)
        if kind == "batchnorm":
            if i in self._bn_sign:
                return threshold_bits(as_float(v), *self._bn_sign[i], t)
            return bn_apply(as_float(v), *self._bn[i])
        if kind == "maxpool2d":
            return maxpool(v, op, t)
        if kind == "flatten":
            return v if isinstance(v, Bits) else float_ops.flatten(v)
        if kind == "sign":
            return v if isinstance(v, Bits) else sign_bits(as_float(v), t)
        if kind == "prelu":
            return float_ops.prelu(as_float(v), self._float[op["weight"]])
        # a value whose graph shape is flat is read flat: bits keep their (N, C, H, W) words
        flat = [n in self._flat for n in op["inputs"]]
        if kind == "add":
            return float_ops.add(*[as_float(a, flat=f) for a, f in zip(xs, flat)])
        if kind == "concat":
            return float_ops.concat(*[as_float(a, flat=f) for a, f in zip(xs, flat)])
        return float_ops._UNARY[kind](as_float(v, flat=flat[0]), op, None)

    def predict(self, x, batch: int = 1000, normalized: bool = False) -> np.ndarray:
        """Class indices (int64) of images: uint8 pixels (N, H, W) / (N, C, H, W), or float
        input already normalised with ``normalized=True``; ``batch`` images per call."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"predict: batch must be an integer >= 1, got {batch!r}")
        x = check_input(x, self.inputs[0], normalized, self.path)
        out = [self.logits(x[s:s + batch], normalized=normalized).argmax(axis=1)
               for s in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

