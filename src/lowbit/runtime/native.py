"""The native whole-graph executor (csrc/graph/executor.h) built from a planned ``Runtime``.

``NativeGraph(rt, path)`` translates the graph, op by op, into the executor's ops (one C++
call per batch then runs the whole model in one arena):

    conv2d / dense, quantized layers with float weights    fconv (im2col + Eigen GEMM)
    qconv2d / qdense on the bitwise kernels                  qlayer (bconv driver, fused stages)
    batchnorm, relu, hardtanh, prelu, act_quant              an output program fused into the
                                                             op that produced their input when
                                                             that value has no other reader;
                                                             else an elementwise op (ew)
    batchnorm read only by signs, sign                       tobits (threshold / bitpack)
    maxpool2d (float max / bits OR), avgpool2d, global_avgpool, upsample, add, concat, flatten

Values are float NHWC or packed bits in the executor; conversions (bits -> ±1 floats,
flattening to torch's (C, H, W) order) are inserted where an op needs them, as the Python
executor's ``as_float`` does.  Every step computes what the Python executor computes
(``lowbit.runtime.graph`` / ``ops`` / ``float_ops``: the living spec), with the same float32
roundings; only the float GEMM sums in its own order (like any BLAS).  A graph that uses
something not supported here raises :class:`NotNative`; ``Runtime`` then runs the Python
executor.  No torch here.
"""
from __future__ import annotations

import os

import numpy as np

from lowbit.runtime import kernels as K
from lowbit.runtime.weights import _KIND_CODE

F32 = np.float32
_ELEMENTWISE = ("batchnorm", "relu", "hardtanh", "prelu", "act_quant")
# step codes of csrc/graph/spec.h
ROUND, MUL_C, MUL_S, MUL_PIXEL, ADD_C, BN, RELU, CLAMP, PRELU_C, PRELU_S, ACT_QUANT = range(11)
# operand transforms (float_ops.h Operand) and qlayer sources (qlayer.h QSource)
_OPERAND = {"sign": 1, "xnor": 1, "uint8": 2, "dorefa": 3, "dorefa-float": 4, "float": 0}
_SOURCE_BITS, _SOURCE_SIGN, _SOURCE_XNOR, _SOURCE_U8, _SOURCE_DOREFA = range(5)


class NotNative(Exception):
    """The graph uses something the native executor does not run (the Python one does)."""


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, F32).reshape(-1))


class NativeGraph:
    """The executor for ``rt`` (a ``lowbit.runtime.graph.Runtime`` after its plan) on kernel
    path ``path`` (portable / avx2 / avx512).  ``labels[k]``: the graph op index native op k
    belongs to (-1: the input); ``records``: native op -> (layer name, acc shape, conv?)."""

    def __init__(self, rt, path: str):
        if K._kernels is None or not hasattr(K._kernels, "Graph"):
            raise NotNative("the compiled extension has no native executor")
        self.rt, self.path = rt, path
        self.g = K._kernels.Graph(rt.threads)
        self.ids: dict[str, int] = {}          # graph value -> native value id
        self.flat_alias: set[str] = set()      # bits values flattened without a copy
        self.pre_flat: dict[str, int] = {}     # flatten output -> the spatial value's id
        self.conv_cache: dict[tuple, int] = {}
        self.labels: list[int] = []
        self.records: dict[int, tuple] = {}
        self.fused: dict[int, int] = {}        # graph op -> graph op it was fused into
        self.readers = _readers(rt.graph)
        self._build()

    # -- building -----------------------------------------------------------------------------
    def _add(self, kind: str, gi: int, inputs: list[int], attrs: dict) -> int:
        op = self.rt.ops[gi] if gi >= 0 else {"op": "input"}
        label = (f"{self.rt.path}: graph op {gi}" + (f" {op['name']!r}" if op.get("name") else "")
                 + f" ({op['op']})") if gi >= 0 else f"{self.rt.path}: graph input"
        try:
            vid = self.g.add_op(kind, label, inputs, attrs)
        except ValueError as e:
            raise ValueError(f"native plan: {e}") from None
        self.labels.append(gi)
        return vid

    def _dims(self, vid: int) -> tuple[bool, int, int, int]:
        b, h, w, c = self.g.value(vid)
        return bool(b), h, w, c

    def _float(self, name: str, gi: int, flat: bool = False) -> int:
        """The native id of ``name`` as floats (flat: torch's (C, H, W) order, (1, 1, F))."""
        vid = self.ids[name]
        bits, h, w, c = self._dims(vid)
        flat = flat or name in self.flat_alias
        key = (name, flat)
        if key in self.conv_cache:
            return self.conv_cache[key]
        if bits:
            out = self._add("tofloat", gi, [vid], {"flat": int(flat and h * w > 1), "path": self.path})
        elif flat and h * w > 1:
            out = self._add("flatten", gi, [vid], {})
        else:
            return vid
        self.conv_cache[key] = out
        return out

    def _build(self) -> None:
        rt = self.rt
        spec = rt.inputs[0]
        shape = list(spec.get("shape") or [1])
        c, h, w = (shape + [1, 1])[:3] if len(shape) == 3 else (shape[0], 1, 1)
        attrs = {"h": int(h), "w": int(w), "c": int(c), "table": np.ascontiguousarray(rt._table, F32),
                 "path": self.path}
        # a float conv with zero padding as the input's only reader (a detector's stem): the
        # input op writes the padded image (zeros around) and the conv runs unpadded on it
        j = self._sole_reader(spec["name"])
        self.prepadded = None
        if j is not None and len(shape) == 3 and rt.ops[j]["op"] == "conv2d":
            geo = _geometry(1, 1, rt.ops[j].get("padding", 0))
            ph, pw = geo["ph"], geo["pw"]
            if ph or pw:
                attrs.update(ph=ph, pw=pw)
                self.prepadded = j
        self.ids[spec["name"]] = self._add("input", -1, [], attrs)
        for i, op in enumerate(rt.ops):
            if i in self.fused:
                continue
            self._op(i, op)
        outs = [self.ids[v] for v in rt.outputs]
        self.g.set_outputs(outs)
        for v, vid in zip(rt.outputs, outs):
            _, h, w, c = self._dims(vid)
            if h * w * c != int(np.prod(rt.shapes[v])):
                raise ValueError(f"native plan: output {v!r} has {h * w * c} values per image, "
                                 f"the graph says {rt.shapes[v]}")

    def _fuse(self, i: int, steps: list) -> str:
        """Append the elementwise ops that alone read op i's output to ``steps``; returns the
        graph value the program's result stands for."""
        out = self.rt.ops[i]["outputs"][0]
        while True:
            users = self.readers.get(out, [])
            if len(users) != 1 or users[0] < 0:
                return out
            j = users[0]
            op = self.rt.ops[j]
            if op["op"] not in _ELEMENTWISE or j in self.rt._bn_sign:
                return out
            steps += self._steps(j, op)
            self.fused[j] = i
            out = op["outputs"][0]

    def _steps(self, j: int, op: dict) -> list:
        kind = op["op"]
        if kind == "batchnorm":
            a, b = self.rt._bn[j]
            return [(BN, {"a": np.ascontiguousarray(a, np.float64), "b": np.ascontiguousarray(b, np.float64)})]
        if kind == "relu":
            return [(RELU, {})]
        if kind == "hardtanh":
            return [(CLAMP, {"lo": float(F32(op["min"])), "hi": float(F32(op["max"]))})]
        if kind == "prelu":
            wt = _f32(self.rt._float[op["weight"]])
            return [(PRELU_S, {"s": float(wt[0])})] if wt.size == 1 else [(PRELU_C, {"v": wt})]
        return [(ACT_QUANT, {"s": float(F32(2 ** int(op["bits"]) - 1))})]

    def _sole_reader(self, value: str):
        users = self.readers.get(value, [])
        return users[0] if len(users) == 1 and users[0] >= 0 else None

    def _fuse_bits(self, end: str, i: int, attrs: dict) -> tuple[str, dict | None]:
        """A float conv whose result is read only by a sign, or by a BatchNorm folded to a
        threshold (read only by signs), emits those bits itself; also through a max pool in
        between: sign(BN(max x)) = OR of sign(BN(x)) where BN increases and AND where it
        decreases (subtracting t and negating are monotone in float32, so this is exact), the
        rewrite export does for integer accumulators.  Returns the value the conv's output now
        stands for and the bits max pool to add after it (or None)."""
        j, pool = self._sole_reader(end), None
        if j is not None and self.rt.ops[j]["op"] == "maxpool2d":
            k = self._sole_reader(self.rt.ops[j]["outputs"][0])
            if k is not None and self._bits_reader(k):
                pool, j = self.rt.ops[j], k
        if j is None or not self._bits_reader(j):
            return end, None
        op = self.rt.ops[j]
        flip = None
        if op["op"] == "sign":
            attrs.update(bits_out=1)
        else:
            t, s = self.rt._bn_sign[j]
            attrs.update(bits_out=1, t=_f32(t), s=_f32(s))
            flip = (np.asarray(s) < 0).astype(np.uint8)
        self.fused[j] = i
        if pool is None:
            return op["outputs"][0], None
        self.fused[self.rt.ops.index(pool)] = i
        (kh, kw), (sh, sw) = pool["kernel"], pool.get("stride") or pool["kernel"]
        pattrs = dict(kh=kh, kw=kw, sh=sh, sw=sw, path=self.path)
        if flip is not None and flip.any():
            pattrs["flip"] = flip
        return op["outputs"][0], pattrs

    def _bits_reader(self, j: int) -> bool:
        op = self.rt.ops[j]
        return op["op"] == "sign" or (op["op"] == "batchnorm" and j in self.rt._bn_sign)

    def _fconv(self, i: int, x: int, attrs: dict, steps: list) -> None:
        """Adds a float conv (with its output program and fused bits / pool) for graph op i."""
        end, pool = self._fuse_bits(self._fuse(i, steps), i, attrs)
        # LOWBIT_FCONV_DIRECT=0: im2col + GEMM also for few input channels (tests, benchmarks)
        attrs["direct"] = int(os.environ.get("LOWBIT_FCONV_DIRECT", "1") != "0")
        # LOWBIT_FCONV_SPARSE=0: the dense GEMM also for mostly-zero dense weights
        attrs["sparse"] = int(os.environ.get("LOWBIT_FCONV_SPARSE", "1") != "0")
        inputs = [x]
        if pool is None and not attrs.get("bits_out"):
            end = self._fuse_pool(i, x, end, attrs)
        res = (self._residual(end, conv=True) if not attrs.get("bits_out") and not attrs["b_trans"]
               and not attrs.get("pool") else None)
        if res is not None:     # program(conv) + r in the conv's output stage
            j, rid = res
            attrs["residual"] = 1
            inputs.append(rid)
            self.fused[j] = i
            end = self.rt.ops[j]["outputs"][0]
        vid = self._add("fconv", i, inputs, dict(attrs, **self._program(steps)))
        if pool is not None:
            vid = self._add("maxpool", i, [vid], pool)
        self._set(end, vid)

    def _fuse_pool(self, i: int, x: int, end: str, attrs: dict) -> str:
        """A first layer's direct conv (1-4 input channels, K <= 128: fconv.h runs it direct at
        every batch size) read only by a float max pool computes the pool too (and the pool's
        own fused elementwise ops, its "post" program): the conv's full-size output is never
        written.  Returns the value the conv's output now stands for."""
        j = self._sole_reader(end)
        c = self._dims(x)[3]
        if (j is None or self.rt.ops[j]["op"] != "maxpool2d" or attrs["b_trans"] or not attrs["direct"]
                or attrs.get("operand", 0) or attrs.get("xnor")
                or attrs["kh"] * attrs["kw"] <= 1 or c > 4 or attrs["kh"] * attrs["kw"] * c > 128):
            return end
        pool = self.rt.ops[j]
        (kh, kw), (sh, sw) = pool["kernel"], pool.get("stride") or pool["kernel"]
        post: list = []
        end = self._fuse(j, post)
        self.fused[j] = i
        attrs.update({"pool": 1, "pool.kh": kh, "pool.kw": kw, "pool.sh": sh, "pool.sw": sw},
                     **self._program(post, "post"))
        return end

    @staticmethod
    def _program(steps: list, pre: str = "step") -> dict:
        attrs: dict = {pre + "s": len(steps)}
        for k, (code, fields) in enumerate(steps):
            attrs[f"{pre}{k}"] = code
            for f, v in fields.items():
                attrs[f"{pre}{k}.{f}"] = v
        return attrs

    def _set(self, name: str, vid: int) -> None:
        self.ids[name] = vid

    def _op(self, i: int, op: dict) -> None:
        rt, kind = self.rt, op["op"]
        ins, out = op["inputs"], op["outputs"][0]
        if kind in ("qconv2d", "qdense"):
            return self._qlayer(i, op)
        if kind in ("conv2d", "dense"):
            dense = kind == "dense"
            x = self._float(ins[0], i, flat=dense)
            wt = rt._float[op["weight"]]
            steps = [(ADD_C, {"v": _f32(rt._float[op["bias"]])})] if op.get("bias") else []
            geo = _geometry(rt._kshape[op["weight"]] if not dense else (1, 1),
                            op.get("stride", 1) if not dense else 1, op.get("padding", 0) if not dense else 0)
            if i == self.prepadded:     # the input op wrote the zero border
                geo.update(ph=0, pw=0)
            attrs = dict(geo, pad=0.0, oc=int(wt.shape[1] if not dense else wt.shape[0]),
                         b_trans=int(dense), weight=wt, path=self.path)
            return self._fconv(i, x, attrs, steps)
        if kind in _ELEMENTWISE:
            if kind == "batchnorm" and i in rt._bn_sign:
                t, s = rt._bn_sign[i]
                return self._set(out, self._add("tobits", i, [self._float(ins[0], i)],
                                                {"t": _f32(t), "s": _f32(s), "path": self.path}))
            steps = self._steps(i, op)
            x = self._float(ins[0], i)
            end = self._fuse(i, steps)
            return self._set(end, self._add("ew", i, [x], dict(self._program(steps), path=self.path)))
        if kind == "sign":
            vid = self.ids[ins[0]]
            if self._dims(vid)[0]:
                if ins[0] in self.flat_alias:
                    self.flat_alias.add(out)
                return self._set(out, vid)
            return self._set(out, self._add("tobits", i, [vid], {"path": self.path}))
        if kind == "flatten":
            vid = self.ids[ins[0]]
            bits, h, w, c = self._dims(vid)
            self.pre_flat[out] = self.pre_flat.get(ins[0], vid)
            if bits:
                self.flat_alias.add(out)
                return self._set(out, vid)
            return self._set(out, self._float(ins[0], i, flat=True))
        if kind == "maxpool2d":
            (kh, kw), (sh, sw) = op["kernel"], op.get("stride") or op["kernel"]
            vid = self.ids[ins[0]]
            if ins[0] in self.flat_alias:
                vid = self._float(ins[0], i)
            attrs, end = dict(kh=kh, kw=kw, sh=sh, sw=sw, path=self.path), out
            if not self._dims(vid)[0]:   # a float pool runs the elementwise ops that alone read it
                steps: list = []
                end = self._fuse(i, steps)
                attrs.update(self._program(steps))
            return self._set(end, self._add("maxpool", i, [vid], attrs))
        if kind in ("avgpool2d", "global_avgpool"):
            x = self._float(ins[0], i)
            if kind == "global_avgpool":
                return self._set(out, self._add("avgpool", i, [x], {"global": 1}))
            (kh, kw), (ph, pw) = op["kernel"], op.get("padding") or [0, 0]
            sh, sw = op.get("stride") or op["kernel"]
            return self._set(out, self._add("avgpool", i, [x], dict(
                kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                count_include_pad=int(op.get("count_include_pad", True)))))
        if kind == "upsample":
            sh, sw = op["scale"]
            return self._set(out, self._add("upsample", i, [self._float(ins[0], i)], dict(fh=sh, fw=sw)))
        if kind in ("add", "concat"):
            xs = [self._float(v, i) for v in ins]
            return self._set(out, self._add(kind, i, xs, {"path": self.path}))
        raise NotNative(f"graph op {i} ({kind}) has no native implementation")

    def _qlayer_float(self, i: int, op: dict, layer) -> None:
        """A quantized layer with float weights (BWN, TWN, float first / last layers): the
        operand transform, the float GEMM, round (integer accumulators), the float stage."""
        mode, steps = layer.mode, []
        x = self._float(op["inputs"][0], i, flat=not layer.conv)
        geo = _geometry(layer.kernel if layer.conv else (1, 1),
                        layer.stride if layer.conv else 1, layer.padding if layer.conv else 0)
        attrs = dict(geo, pad=float(layer.pad_value) if layer.conv else 0.0, oc=layer.oc,
                     b_trans=int(not layer.conv), weight=layer.w_float, path=self.path,
                     operand=_OPERAND[mode], xnor=int(mode == "xnor"))
        if mode == "uint8":
            attrs.update({"operand.a": float(F32(op["u8"]["std"])),
                          "operand.b": float(F32(op["u8"]["mean"]))})
        elif mode == "dorefa":
            attrs["operand.a"] = float(F32(2 ** layer.a_bits - 1))
        if layer.integer_acc:
            steps.append((ROUND, {}))
        self._float_stage(layer, steps)
        self._fconv(i, x, attrs, steps)

    def _qlayer(self, i: int, op: dict) -> None:
        """A quantized layer on the bitwise kernels (or, with float weights, _qlayer_float)."""
        rt = self.rt
        layer = rt.layers[op["name"]]
        src = op["inputs"][0]
        mode = layer.mode
        steps: list = []
        if layer.kind == "float":
            return self._qlayer_float(i, op, layer)
        pw = layer.pw
        attrs = dict(path=pw.path, variant=pw.variant, oc=pw.oc, c=pw.c, kh=pw.kh, kw=pw.kw,
                     w_bits=pw.w_bits, packed=pw.packed, w_pop=pw.w_pop,
                     xkind=4 if pw.variant.startswith("masked-") else _KIND_CODE[pw.kind],
                     pad_value=int(layer.pad_value) if pw.kind in ("binary", "ternary") else 0)
        if pw.tap_sums.size:
            attrs["tap_sums"] = pw.tap_sums
        if layer.conv:
            attrs.update(_geometry(layer.kernel, layer.stride, layer.padding))
        else:
            attrs.update(_geometry((pw.kh, pw.kw), 1, 0))
        vid = self.ids[src]
        bits = self._dims(vid)[0]
        if layer.spatial:
            if src not in self.pre_flat:
                raise NotNative(f"graph op {i}: a spatial dense layer must read a flattened value")
            vid = self.pre_flat[src]
            bits = self._dims(vid)[0]
            if not bits or mode != "sign":
                raise NotNative(f"graph op {i}: spatial dense layers run on sign bits only")
            source = _SOURCE_BITS
        elif mode == "sign" and bits and not (layer.flat_dense and src in self.flat_alias
                                              and self._spatial(vid)):
            source = _SOURCE_BITS
        else:
            vid = self._float(src, i, flat=layer.flat_dense)
            source = {"sign": _SOURCE_SIGN, "xnor": _SOURCE_XNOR, "uint8": _SOURCE_U8,
                      "dorefa": _SOURCE_DOREFA}.get(mode)
            if source is None:
                raise NotNative(f"graph op {i}: input mode {mode!r} on the bitwise kernels")
        attrs["source"] = source
        if layer.kind.startswith("planes"):
            attrs["a_bits"] = layer.a_bits
            if mode == "uint8":
                attrs.update({"levels.a": float(F32(op["u8"]["std"])), "levels.b": float(F32(op["u8"]["mean"]))})
            else:
                attrs.update({"levels.a": float(F32(2 ** layer.a_bits - 1)), "levels.b": 0.0})
        if layer.kind == "planes-planes":
            attrs.update({"ones.packed": layer.pw_ones.packed, "ones.w_pop": layer.pw_ones.w_pop,
                          "step": layer.step, "offset": layer.offset})
        end = op["outputs"][0]
        if layer.out == "bits":
            attrs.update(bits_out=1, thr=np.ascontiguousarray(layer.thr, np.int32),
                         flip=np.ascontiguousarray(layer.flip, np.uint8))
            p = op.get("pool")
            if p is not None:
                (kh, kw), (sh, sw) = p["kernel"], p.get("stride") or p["kernel"]
                attrs.update({"pool": 1, "pool.kh": kh, "pool.kw": kw, "pool.sh": sh, "pool.sw": sw})
        inputs = [vid]
        if layer.out != "bits":
            attrs["bits_out"] = 0
            self._float_stage(layer, steps)
            end = self._fuse(i, steps)
            attrs.update(self._program(steps))
            res = self._residual(end, layer.conv)
            if res is not None:     # program(acc) + r in the layer's output stage
                j, rid = res
                attrs["residual"] = 1
                inputs.append(rid)
                self.fused[j] = i
                end = self.rt.ops[j]["outputs"][0]
        out = self._add("qlayer", i, inputs, attrs)
        _, ih, iw, _ = self._dims(vid)
        oh = (ih + 2 * attrs["ph"] - attrs["kh"]) // attrs["sh"] + 1
        ow = (iw + 2 * attrs["pw"] - attrs["kw"]) // attrs["sw"] + 1
        self.records[len(self.labels) - 1] = (layer.name, (oh, ow, pw.oc), layer.conv)
        self._set(end, out)

    def _residual(self, end: str, conv: bool):
        """(add op j, native id of its other input) when ``end`` is read only by a two-input
        add whose other input is a float value of the same shape that already exists: the
        layer adds it in its output stage (x + r, JoinOp's sum, exactly)."""
        j = self._sole_reader(end)
        if j is None or not conv or self.rt.ops[j]["op"] != "add":
            return None
        ins = self.rt.ops[j]["inputs"]
        if len(ins) != 2 or ins[0] == ins[1]:
            return None
        other = ins[1] if ins[0] == end else ins[0]
        if other not in self.ids or other in self.flat_alias or other in self.rt._flat:
            return None
        rid = self.ids[other]
        if self._dims(rid)[0] or tuple(self.rt.shapes[other]) != tuple(self.rt.shapes[end]):
            return None
        return j, rid

    def _spatial(self, vid: int) -> bool:
        _, h, w, _ = self._dims(vid)
        return h * w > 1

    @staticmethod
    def _float_stage(layer, steps: list) -> None:
        """y = ((acc * sw) * sx) * K + bias (QLayer.__call__)."""
        if layer.sw is not None:
            sw = _f32(layer.sw)
            steps.append((MUL_S, {"s": float(sw[0])}) if sw.size == 1 else (MUL_C, {"v": sw}))
        if layer.sx is not None:
            steps.append((MUL_S, {"s": float(layer.sx)}))
        if layer.mode == "xnor":
            steps.append((MUL_PIXEL, {}))
        if layer.bias is not None:
            steps.append((ADD_C, {"v": _f32(layer.bias)}))

    # -- running ------------------------------------------------------------------------------
    def run(self, x: np.ndarray, profile: dict | None = None, record: dict | None = None,
            poison: bool = False) -> dict:
        """{graph output: float32 (N, ...) in torch's layout} of a checked input batch x
        (uint8 pixels or normalised float32, NCHW / (N, F))."""
        rt = self.rt
        n = x.shape[0]
        outs = [np.empty((n,) + tuple(rt.shapes[v]), F32) for v in rt.outputs]
        try:
            res = self.g.run(x, outs, profile is not None, record is not None, poison)
        except ValueError as e:
            if "NaN or inf" not in str(e):
                raise
            from lowbit.runtime.inputs import InputError
            raise InputError(f"{rt.path}: input contains NaN or inf") from None
        if profile is not None:     # fused ops and aliases (flatten / sign of bits): 0 s
            for i in range(len(rt.ops)):
                profile.setdefault(rt.op_label(i), 0.0)
            for k, s in enumerate(res[0]):
                gi = self.labels[k]
                key = "input" if gi < 0 else rt.op_label(gi)
                profile[key] = profile.get(key, 0.0) + s
        if record is not None:
            for k, acc in res[1]:
                name, (oh, ow, oc), conv = self.records[k]
                a = acc.reshape(n, oh, ow, oc)
                record[name] = np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if conv else a[:, 0, 0]
        return dict(zip(rt.outputs, outs))


def _geometry(kernel, stride, padding) -> dict:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return dict(kh=int(kh), kw=int(kw), sh=int(sh), sw=int(sw), ph=int(ph), pw=int(pw))


def _readers(graph) -> dict:
    from lowbit.codec.graph import consumers
    return consumers(graph)
