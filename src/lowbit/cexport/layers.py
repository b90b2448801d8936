"""The graph walk of ``lower``: values, implicit conversions, and the non-layer ops.

Supported: conv2d, dense, qconv2d / qdense (binary weights with sign inputs on the XNOR
kernels, float output or folded sign(BN) bits with a fused max pool; float-kind layers --
float weights -- with float or sign inputs), batchnorm (float, or to bits when only signs read
it), maxpool2d (float or bits), relu, hardtanh, sign, flatten, add.  The quantized and float
layers themselves are in ``qlayers``.
"""
from __future__ import annotations

import numpy as np

from lowbit import codec
from lowbit.cexport.cdata import c_array
from lowbit.cexport.lower import Lowered, Step, Unsupported, Value, cname
from lowbit.cexport.qlayers import LayerMixin, _sign_reader
from lowbit.codec.fold import bn_affine, fold_float_threshold

F32 = np.float32
SUPPORTED = ("conv2d", "dense", "qconv2d", "qdense", "batchnorm", "maxpool2d", "relu",
             "hardtanh", "sign", "flatten", "add")


class Builder(LayerMixin):
    def __init__(self, mf, graph: dict, shapes: dict, padded: set, path: str):
        self.mf, self.graph, self.shapes, self.padded, self.path = mf, graph, shapes, padded, path
        self.ops = graph["ops"]
        self.readers = codec.graph.consumers(graph)
        self.values: dict[str, Value] = {}
        self.steps: list[Step] = []
        self.consts = 0
        self.kernels: set[str] = set()
        self.skip: set[int] = set()
        self.traced: list[str] = []             # binary layers by trace id (LOWBIT_TRACE)
        self._conv: dict[tuple, str] = {}       # (root, "f" / "b") -> converted value

    # -- values -------------------------------------------------------------------------------
    def root(self, name: str) -> Value:
        v = self.values[name]
        while v.root:
            v = self.values[v.root]
        return v

    def new(self, name: str, kind: str, shape, mark: tuple = ()) -> str:
        shape = tuple(int(s) for s in shape)
        v = Value(name, kind, shape)
        if kind == "b":
            c = shape[0]
            pad = c % 32 == 0 or name in self.padded or any(m in self.padded for m in mark)
            v.pstride = 32 * ((c + 31) // 32) if pad else c
        self.values[name] = v
        return name

    def alias(self, name: str, of: str, shape) -> None:
        self.values[name] = Value(name, self.root(of).kind, tuple(shape), root=of)

    def as_float(self, name: str) -> str:
        """A float32 CHW value with the contents of ``name`` (+-1 for bits)."""
        r = self.root(name)
        if r.kind == "f":
            return name
        key = (r.name, "f")
        if key not in self._conv:
            out = self.new(f"{r.name}:f", "f", r.shape)
            if r.kind == "u8":
                self._input_step(r, out)
            else:
                c, hw, ps = r.c, r.npix, r.pstride
                self.kernels.add("lb_bits_to_f32")
                self.add_step(f"+-1 floats of bits {r.name} {r.shape}", [r.name], out,
                              lambda p, r=r: f"lb_bits_to_f32({p(r.name)}, {c}, {hw}, {ps}, "
                                             f"{p(out)});")
            self._conv[key] = out
        return self._conv[key]

    def as_bits(self, name: str, mark: tuple = ()) -> str:
        """A bits value of sign(``name``) (x >= 0 -> +1)."""
        r = self.root(name)
        if r.kind == "b":
            return name
        f = self.root(self.as_float(name))
        key = (f.name, "b")
        if key not in self._conv:
            out = self.new(f"{f.name}:b", "b", f.shape, mark + (name, r.name))
            self._sign_step(f, out, None, None, f"sign of {f.name}")
            self._conv[key] = out
        return self._conv[key]

    def _input_step(self, r: Value, out: str) -> None:
        from lowbit.cexport.tables import input_tables
        spec = self.graph["inputs"][0]
        tab = input_tables(spec.get("normalization"), r.c)
        tab = tab[:1] if (tab == tab[:1]).all() else tab
        tname = self.const("float", "input_table", tab)
        c, hw = (r.c, r.npix) if len(r.shape) == 3 else (1, r.c)    # (F,): one channel
        self.kernels.add("lb_input_u8")
        self.add_step(f"uint8 input {r.shape} -> float32 (normalisation table)", [r.name], out,
                      lambda p: f"lb_input_u8({p(r.name)}, {tname}, {len(tab)}, {c}, {hw}, "
                                f"{p(out)});")

    def _sign_step(self, x: Value, out: str, t, s, note: str) -> None:
        o = self.values[out]
        c, hw = x.c, x.npix
        tn = self.const("float", f"{out}_t", t) if t is not None else "NULL"
        sn = self.const("float", f"{out}_s", s) if s is not None else "NULL"
        self.kernels.add("lb_sign_bits")
        self.add_step(note, [x.name], out,
                      lambda p: f"lb_sign_bits({p(x.name)}, {c}, {hw}, {tn}, {sn}, "
                                f"{o.pstride}, {p(out)}, {o.words});")

    # -- constants and steps ------------------------------------------------------------------
    def const(self, ctype: str, name: str, values) -> str:
        ident = f"k_{cname(name)}"
        a = np.asarray(values)
        self._decls.append(c_array(ctype, ident, a))
        self.consts += a.size * {"float": 4, "uint32_t": 4, "int32_t": 4, "uint8_t": 1}[ctype]
        return ident

    def add_step(self, note: str, reads: list[str], writes: str, call) -> None:
        self.steps.append(Step(note, [self.root(r).name for r in reads],
                               self.root(writes).name, call, self._decls))
        self._decls = []

    def tensor(self, op: dict, key: str):
        name = op.get(key)
        return None if name is None else np.asarray(self.mf.tensor(name))

    def where(self, i: int, op: dict) -> str:
        return f"{self.path}: graph op {i} {op.get('name') or ''} ({op['op']})".replace("  ", " ")

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> Lowered:
        spec = self.graph["inputs"][0]
        self._decls: list[str] = []
        self.new(spec["name"], "u8", spec["shape"])
        for i, op in enumerate(self.ops):
            if i in self.skip:
                continue
            fn = getattr(self, "_op_" + op["op"], None)
            if fn is None:
                raise Unsupported(f"{self.where(i, op)}: op {op['op']!r} is not supported by "
                                  f"export-c (it supports: {', '.join(SUPPORTED)})")
            fn(i, op)
        out = self._output()
        return Lowered(self.values, self.steps, self.values[spec["name"]], out, self.consts,
                       self.kernels, self.traced)

    def _output(self) -> Value:
        name = self.graph["outputs"][0]
        shape = self.shapes[name]
        n = int(np.prod(shape))
        out = Value("output", "out", (n,))
        r = self.root(name)
        last = self.steps[-1] if self.steps else None
        if r.kind == "f" and last is not None and last.writes == r.name and \
                all(r.name not in s.reads for s in self.steps):
            r.kind = "out"                     # the last step writes the caller's buffer
            self.values["output"] = Value("output", "out", (n,), root=r.name)
            return self.values["output"]
        self.values["output"] = out
        if r.kind == "b":
            self.as_float(name)
        src = self.root(self.as_float(name)).name
        self.add_step("the graph output -> output", [src], "output",
                      lambda p: f"for (i = 0; i < {n}; ++i) output[i] = {p(src)}[i];")
        return out

    def _op_flatten(self, i, op):
        self.alias(op["outputs"][0], op["inputs"][0], self.shapes[op["outputs"][0]])

    def _op_sign(self, i, op):
        out = op["outputs"][0]
        self.alias(out, self.as_bits(op["inputs"][0], (out,)), self.shapes[out])

    def _op_batchnorm(self, i, op):
        x = self.root(self.as_float(op["inputs"][0]))
        out = op["outputs"][0]
        stats = [self.tensor(op, k) for k in ("gamma", "beta", "mean", "var")]
        users = self.readers.get(out, [])
        c, hw = x.c, x.npix
        if users and all(u >= 0 and _sign_reader(self.ops[u]) for u in users):
            t, s = fold_float_threshold(*stats, op["eps"])
            self.new(out, "b", self.shapes[out])
            self._sign_step(x, out, t, s, f"{op.get('name')}: sign(BatchNorm) as float "
                                          f"thresholds, {x.shape} -> bits")
            return
        a, b = (v.astype(F32) for v in bn_affine(*stats, op["eps"]))
        an, bn = self.const("float", f"{out}_a", a), self.const("float", f"{out}_b", b)
        self.new(out, "f", self.shapes[out])
        self.kernels.add("lb_batchnorm")
        self.add_step(f"{op.get('name')}: BatchNorm {x.shape}", [x.name], out,
                      lambda p: f"lb_batchnorm({p(x.name)}, {c}, {hw}, {an}, {bn}, {p(out)});")

    def _op_maxpool2d(self, i, op):
        r, out = self.root(op["inputs"][0]), op["outputs"][0]
        (kh, kw), (sh, sw) = op["kernel"], op.get("stride") or op["kernel"]
        shape = self.shapes[out]
        (c, h, w), (oh, ow) = r.shape, shape[1:]
        if r.kind == "b":
            o = self.values[self.new(out, "b", shape)]
            self.kernels.add("lb_maxpool_bits")
            self.add_step(f"{op.get('name')}: max pool of bits (OR)", [r.name], out,
                          lambda p: f"lb_maxpool_bits({p(r.name)}, {c}, {h}, {w}, {r.pstride}, "
                                    f"{kh}, {kw}, {sh}, {sw}, {oh}, {ow}, {o.pstride}, "
                                    f"{p(out)}, {o.words});")
            return
        x = self.root(self.as_float(r.name))
        self.new(out, "f", shape)
        self.kernels.add("lb_maxpool_f32")
        self.add_step(f"{op.get('name')}: max pool {x.shape} -> {shape}", [x.name], out,
                      lambda p: f"lb_maxpool_f32({p(x.name)}, {c}, {h}, {w}, {kh}, {kw}, {sh}, "
                                f"{sw}, {oh}, {ow}, {p(out)});")

    def _unary(self, i, op, call: str, kernel: str):
        x = self.root(self.as_float(op["inputs"][0]))
        out = op["outputs"][0]
        self.new(out, "f", self.shapes[out])
        n = int(np.prod(x.shape))
        self.kernels.add(kernel)
        self.add_step(f"{op.get('name')}: {op['op']}", [x.name], out,
                      lambda p: call.format(x=p(x.name), n=n, y=p(out)))

    def _op_relu(self, i, op):
        self._unary(i, op, "lb_relu({x}, {n}, {y});", "lb_relu")

    def _op_hardtanh(self, i, op):
        from lowbit.cexport.cdata import c_float
        lo, hi = c_float(op["min"]), c_float(op["max"])
        self._unary(i, op, "lb_hardtanh({x}, {n}, " + lo + ", " + hi + ", {y});", "lb_hardtanh")

    def _op_add(self, i, op):
        xs = [self.root(self.as_float(v)).name for v in op["inputs"]]
        out = op["outputs"][0]
        self.new(out, "f", self.shapes[out])
        n = int(np.prod(self.shapes[out]))
        self.kernels.add("lb_add_f32")
        self.add_step(f"{op.get('name')}: add of {len(xs)}", xs, out, lambda p: " ".join(
            [f"lb_add_f32({p(xs[0])}, {p(xs[1])}, {n}, {p(out)});"]
            + [f"lb_add_f32({p(out)}, {p(v)}, {n}, {p(out)});" for v in xs[2:]]))
