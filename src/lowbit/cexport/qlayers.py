"""Conv and dense layers of ``lower``: float conv2d / dense and the quantized qconv2d / qdense.

Weights become flash constants in the kernels' layouts (csrc/mcu/lowbit_mcu.h):
- float conv: [oc][kh][kw][c] (the im2col order of the Python runtime's conv2d_float);
- binary conv: per (oc, ky, kx) the c channel bits padded to whole words;
- binary dense: each row in the bits layout of its input (a 4x4x50 input in the stream
  layout: 800 bits = 25 words a row); a flat dense reading spatial bits takes its columns in
  torch's (C, H, W) order, so they are permuted to the (H, W, C) memory order first;
- float dense over +-1 bits: columns permuted the same way.
"""
from __future__ import annotations

import numpy as np

from lowbit import codec
from lowbit.cexport.cdata import pack_layout, struct_init
from lowbit.cexport.lower import Unsupported, cname
from lowbit.codec.fold import fold_float_threshold

F32 = np.float32


def _sign_reader(op: dict) -> bool:
    """An op that reads only the signs of its input (as the Python runtime decides)."""
    return op["op"] == "sign" or (op["op"] in ("qconv2d", "qdense") and op["in"] == "sign")


class LayerMixin:
    # -- shared pieces ------------------------------------------------------------------------
    def _pool_fusion(self, out: str):
        """A max pool that alone reads ``out`` is computed by the conv itself: (the pool's
        output value, (pkh, pkw, psh, psw)); else (out, (1, 1, 1, 1))."""
        users = self.readers.get(out, [])
        if len(users) == 1 and users[0] >= 0 and self.ops[users[0]]["op"] == "maxpool2d":
            pool = self.ops[users[0]]
            self.skip.add(users[0])
            k = pool["kernel"]
            s = pool.get("stride") or k
            return pool["outputs"][0], (k[0], k[1], s[0], s[1])
        return out, (1, 1, 1, 1)

    def _stage(self, name: str, sw=None, sx=None, bias=None, round_acc: bool = False) -> dict:
        """The lb_stage_t initialiser: y = ((round?(acc) * sw) * sx) + bias."""
        sw = None if sw is None else np.asarray(sw, F32).ravel()
        return {"sw": self.const("float", f"{name}_sw", sw) if sw is not None else "NULL",
                "sw_n": 0 if sw is None else sw.size,
                "has_sx": int(sx is not None), "sx": float(F32(sx if sx is not None else 0)),
                "bias": self.const("float", f"{name}_bias", np.asarray(bias, F32))
                if bias is not None else "NULL",
                "round_acc": int(bool(round_acc))}

    def _qstage(self, op: dict, name: str) -> dict:
        return self._stage(name, self.tensor(op, "sw"), op.get("sx"), self.tensor(op, "bias"),
                           op["integer_acc"] and codec.graph.bitwise_kind(op) == "float")

    def _params(self, ctype: str, name: str, fields: dict) -> str:
        ident = f"p_{cname(name)}"
        self._decls.append(struct_init(ctype, ident, fields))
        return ident

    # -- float layers -------------------------------------------------------------------------
    def _sign_bn_fusion(self, out: str):
        """A BatchNorm that alone reads ``out`` and whose output only signs read: its output
        value and float thresholds (t, s), computed by the conv itself; else None."""
        users = self.readers.get(out, [])
        if len(users) != 1 or users[0] < 0 or self.ops[users[0]]["op"] != "batchnorm":
            return None
        bn = self.ops[users[0]]
        bn_users = self.readers.get(bn["outputs"][0], [])
        if not bn_users or not all(u >= 0 and _sign_reader(self.ops[u]) for u in bn_users):
            return None
        self.skip.add(users[0])
        stats = [self.tensor(bn, k) for k in ("gamma", "beta", "mean", "var")]
        return bn["outputs"][0], fold_float_threshold(*stats, bn["eps"])

    def _float_conv(self, i, op, x, w: np.ndarray, stage: dict, pad: float) -> None:
        name = cname(op.get("name") or f"op{i}")
        out, (pkh, pkw, psh, psw) = self._pool_fusion(op["outputs"][0])
        shape = self.shapes[out]
        oc, c, kh, kw = w.shape
        (sh, sw), (ph, pw) = op.get("stride") or (1, 1), op.get("padding") or (0, 0)
        fields = {
            "c": c, "h": x.shape[1], "w": x.shape[2], "oc": oc, "kh": kh, "kw": kw, "sh": sh,
            "sw": sw, "ph": ph, "pw": pw, "pad": float(pad), "pkh": pkh, "pkw": pkw, "psh": psh,
            "psw": psw, "out_h": shape[1], "out_w": shape[2],
            "wt": self.const("float", f"{name}_w", np.asarray(w, F32).transpose(0, 2, 3, 1)),
            "st": stage,
            "thr_t": "NULL", "thr_s": "NULL", "out_ps": 0, "out_words": 0}
        fused = " + max pool" if pkh * pkw > 1 or psh * psw > 1 else ""
        sign_bn = self._sign_bn_fusion(out)
        if sign_bn is not None:
            out, (t, s) = sign_bn
            o = self.values[self.new(out, "b", shape)]
            fields.update(thr_t=self.const("float", f"{out}_t", t),
                          thr_s=self.const("float", f"{out}_s", s), out_ps=o.pstride,
                          out_words=o.words)
            fused += f" + sign({out}) as float thresholds -> bits"
        else:
            self.new(out, "f", shape)
        pn = self._params("lb_fconv_t", name, fields)
        self.kernels.add("lb_fconv")
        self.add_step(f"{op.get('name')}: float conv {x.shape} -> {shape}{fused}", [x.name], out,
                      lambda p: f"lb_fconv(&{pn}, {p(x.name)}, {p(out)});")

    def _float_dense(self, i, op, x, w: np.ndarray, stage: dict) -> None:
        name = cname(op.get("name") or f"op{i}")
        out = op["outputs"][0]
        n_out, n_in = w.shape
        wn = self.const("float", f"{name}_w", np.asarray(w, F32))
        self.new(out, "f", (n_out,))
        if x.kind == "b":      # +-1 input read from its bits; w's columns in memory order
            pn = self._params("lb_fdense_bits_t", name, {
                "npix": x.npix, "c": x.c, "pstride": x.pstride, "n_out": n_out, "wt": wn,
                "st": stage})
            self.kernels.add("lb_fdense_bits")
            call = lambda p: f"lb_fdense_bits(&{pn}, {p(x.name)}, {p(out)});"
        else:
            pn = self._params("lb_fdense_t", name, {"n_in": n_in, "n_out": n_out, "wt": wn,
                                                    "st": stage})
            self.kernels.add("lb_fdense")
            call = lambda p: f"lb_fdense(&{pn}, {p(x.name)}, {p(out)});"
        self.add_step(f"{op.get('name')}: dense {n_in} -> {n_out}", [x.name], out, call)

    def _op_conv2d(self, i, op):
        x = self.root(self.as_float(op["inputs"][0]))
        self._float_conv(i, op, x, self.tensor(op, "weight"),
                         self._stage(cname(op.get("name") or f"op{i}"), bias=self.tensor(op, "bias")),
                         0.0)

    def _op_dense(self, i, op):
        x = self.root(self.as_float(op["inputs"][0]))
        w = np.asarray(self.tensor(op, "weight"), F32)
        self._float_dense(i, op, x, w.reshape(w.shape[0], -1),
                          self._stage(cname(op.get("name") or f"op{i}"), bias=self.tensor(op, "bias")))

    # -- quantized layers ---------------------------------------------------------------------
    def _qkind(self, i, op) -> str:
        kind, mode = codec.graph.bitwise_kind(op), op["in"]
        if (kind == "binary" and mode == "sign") or (kind == "float" and mode in ("float", "sign")):
            return kind
        raise Unsupported(f"{self.where(i, op)}: input {mode!r} ({op['a_bits']} bits) with "
                          f"{op['w_levels']!r} weights ({op['w_bits']} bits) runs on the {kind} "
                          f"kernels; export-c supports binary weights with sign inputs and "
                          f"float weights with float or sign inputs")

    def _q_input(self, op: dict):
        """The layer's input: bits for sign inputs, float for float ones."""
        v = op["inputs"][0]
        return self.root(self.as_bits(v, (v,)) if op["in"] == "sign" else self.as_float(v))

    def _op_qconv2d(self, i, op):
        x = self._q_input(op)
        name = cname(op["name"])
        lv = np.asarray(self.tensor(op, "weight"), F32)          # (OC, KH, KW, C)
        if self._qkind(i, op) == "float":
            x = self.root(self.as_float(x.name))
            return self._float_conv(i, op, x, lv.transpose(0, 3, 1, 2), self._qstage(op, name),
                                    float(op["pad_value"]))
        if x.pstride % 32:
            raise AssertionError(f"{op['name']}: binary conv input {x.name} is not word-aligned")
        oc, kh, kw, c = lv.shape
        wpp = x.pstride // 32
        out = op["outputs"][0]
        shape = self.shapes[out]
        fields = {"id": self._trace_id(op), "c": c, "h": x.shape[1], "w": x.shape[2], "wpp": wpp,
                  "oc": oc, "kh": kh, "kw": kw, "sh": op["stride"][0], "sw": op["stride"][1],
                  "ph": op["padding"][0], "pw": op["padding"][1],
                  "pad_value": int(op["pad_value"]), "pkh": 1, "pkw": 1, "psh": 1, "psw": 1,
                  "out_h": shape[1], "out_w": shape[2],
                  "wt": self.const("uint32_t", f"{name}_w",
                                   pack_layout(lv.reshape(oc, kh * kw, c), 32 * wpp))}
        if op["out"] == "bits":
            pool = op.get("pool")
            if pool is not None:
                k = pool["kernel"]
                s = pool.get("stride") or k
                fields.update(pkh=k[0], pkw=k[1], psh=s[0], psw=s[1])
            o = self.values[self.new(out, "b", shape)]
            fields.update(self._thresholds(op, name), out_ps=o.pstride, out_words=o.words)
            fields["st"] = self._stage(name)
        else:
            self.new(out, "f", shape)
            fields.update(thr="NULL", flip="NULL", out_ps=0, out_words=0,
                          st=self._qstage(op, name))
        pn = self._params("lb_bconv_t", name, fields)
        self.kernels.add("lb_bconv")
        self.add_step(f"{op['name']}: binary conv {x.shape} -> {shape} {op['out']}"
                      f"{' + pool' if op.get('pool') else ''}", [x.name], out,
                      lambda p: f"lb_bconv(&{pn}, {p(x.name)}, {p(out)});")

    def _trace_id(self, op) -> int:
        self.traced.append(op["name"])
        return len(self.traced) - 1

    def _thresholds(self, op, name) -> dict:
        return {"thr": self.const("int32_t", f"{name}_thr", self.tensor(op, "threshold")),
                "flip": self.const("uint8_t", f"{name}_flip", self.tensor(op, "flip"))}

    def _columns(self, op, x, lv: np.ndarray) -> np.ndarray:
        """The dense weights as (OC, npix, C) in the memory order of the input x."""
        oc = lv.shape[0]
        if len(x.shape) == 1:
            return lv.reshape(oc, 1, -1)
        if op.get("spatial"):                           # (OC, H, W, C): memory order already
            return lv.reshape(oc, x.npix, x.c)
        return lv.reshape(oc, x.c, x.npix).transpose(0, 2, 1)   # torch's (C, H, W) columns

    def _op_qdense(self, i, op):
        x = self._q_input(op)
        name = cname(op["name"])
        lv = np.asarray(self.tensor(op, "weight"), F32)
        oc, out = lv.shape[0], op["outputs"][0]
        if self._qkind(i, op) == "float":
            if op.get("spatial"):
                raise Unsupported(f"{self.where(i, op)}: a spatial qdense with float weights "
                                  f"is not supported by export-c")
            cols = self._columns(op, x, lv) if x.kind == "b" else lv
            return self._float_dense(i, op, x, cols.reshape(oc, -1), self._qstage(op, name))
        wt = pack_layout(self._columns(op, x, lv), x.pstride)
        fields = {"id": self._trace_id(op), "nbits": x.c * x.npix, "nwords": wt.shape[1],
                  "n_out": oc, "wt": self.const("uint32_t", f"{name}_w", wt)}
        if op["out"] == "bits":
            self.new(out, "b", self.shapes[out])
            fields.update(self._thresholds(op, name), st=self._stage(name))
        else:
            self.new(out, "f", self.shapes[out])
            fields.update(thr="NULL", flip="NULL", st=self._qstage(op, name))
        pn = self._params("lb_bdense_t", name, fields)
        self.kernels.add("lb_bdense")
        self.add_step(f"{op['name']}: binary dense {x.c * x.npix} -> {oc} {op['out']}",
                      [x.name], out, lambda p: f"lb_bdense(&{pn}, {p(x.name)}, {p(out)});")
