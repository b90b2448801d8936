"""Estimated energy per inference from a per-operation cost table (numpy only, no torch).

The default table is Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm CMOS at 0.9 V (the table the source documents quote: a DRAM access costs
~6400x a 32-bit integer add)::

    32-bit float multiply 3.7 pJ, add 0.9 pJ;  32-bit int multiply 3.1 pJ, add 0.1 pJ;
    8-bit int multiply 0.2 pJ, add 0.03 pJ;  32-bit SRAM read (8 KB) 5 pJ;  32-bit DRAM 640 pJ

How an op is priced (one image, batch 1; counts from ``lowbit.runtime.summary.file_summary``):

- float conv / dense: MACs x (float multiply + float add);
- bitwise layers (XNOR-popcount / AND-popcount, ``lowbit summary``'s ``*`` rows): BOPs / 64
  words, each one XNOR (or AND) + popcount of 64 bits priced as *one 64-bit integer
  operation* = ``binary_word_64`` (2 x a 32-bit int add = 0.2 pJ, our assumption: Horowitz has
  no popcount entry) plus the 32-bit int add that accumulates the count (0.1 pJ);
- quantized layers on the float path (binary / ternary weights with float activations: BWN,
  TWN): MACs x float add (a +-1 weight is an add or a subtract; scale once per output);
- output stages: ``bits`` (folded sign(BN)): one int compare (= int add) per output element;
  ``float``: a float multiply + add per output element (scale, bias);
- BatchNorm: float multiply + add per element; ReLU / hardtanh / sign / max-pool
  comparisons and additions of add / average-pool: one float add each (max-pool on packed
  bits: one 64-bit int op per word per window tap); the input normalisation: a table read
  (SRAM) per pixel; flatten / concat: free;
- memory: every op reads its weights once (the tensors as the runtime holds them: packed bits
  1 bit per weight, Deep-Compression tensors decoded to float32, float tensors float32) and
  reads its inputs and writes its output once (packed bits 1 bit per value, float 32 bits);
  a tensor of at most ``cache_bytes`` is an SRAM access, a larger one DRAM, per 32 bits
  (a write costs what a read costs).  Reuse inside a conv (im2col) is assumed to hit the
  cache, so it is not counted again.

It is an estimate of *this runtime's* work, in the spirit of Deep Compression's energy
tables: compute plus data movement, no leakage, no control or instruction overhead.  A
sparse (zero-skipping) engine such as EIE would price Deep-Compression files differently:
this runtime decodes them to dense float32 and multiplies every weight, zeros included.

The table is configurable: :func:`load_table` reads a JSON file with any of ``TABLE``'s keys
(``lowbit summary FILE --energy-table T.json``, ``--cache-kb N``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["TABLE", "SOURCE", "load_table", "op_energy", "estimate", "estimate_file",
           "format_energy", "float_estimate"]

SOURCE = "Horowitz, ISSCC 2014, 45 nm (pJ)"
TABLE: dict[str, float] = {
    "float_mult_32": 3.7, "float_add_32": 0.9,
    "int_mult_32": 3.1, "int_add_32": 0.1,
    "int_mult_8": 0.2, "int_add_8": 0.03,
    "binary_word_64": 0.2,          # XNOR/AND + popcount of 64 bits ~ one 64-bit int op
    "sram_32": 5.0,                 # per 32 bits read or written, 8 KB SRAM
    "dram_32": 640.0,               # per 32 bits read or written
    "cache_bytes": 8192.0,          # tensors up to this size live in SRAM
}


def load_table(path: str | None = None, cache_kb: float | None = None,
               overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """``TABLE`` updated from a JSON object file (unknown keys refused), then ``cache_kb``."""
    table = dict(TABLE)
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read the energy table: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of {', '.join(TABLE)}")
        overrides = {**data, **(overrides or {})}
    for k, v in (overrides or {}).items():
        if k not in TABLE:
            raise ValueError(f"energy table: unknown key {k!r}; known: {', '.join(TABLE)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"energy table: {k}: expected a number >= 0, got {v!r}")
        table[k] = float(v)
    if cache_kb is not None:
        if not cache_kb >= 0:
            raise ValueError(f"--cache-kb: expected a number >= 0, got {cache_kb!r}")
        table["cache_bytes"] = float(cache_kb) * 1024
    return table


def _words(nbytes: float) -> int:
    return int(math.ceil(nbytes / 4))


def _mem(nbytes: float, t: Mapping[str, float]) -> tuple[float, float]:
    """(SRAM pJ, DRAM pJ) of reading (or writing) a tensor of ``nbytes`` once."""
    if nbytes <= 0:
        return 0.0, 0.0
    if nbytes <= t["cache_bytes"]:
        return _words(nbytes) * t["sram_32"], 0.0
    return 0.0, _words(nbytes) * t["dram_32"]


def _compute(r: Mapping[str, Any], t: Mapping[str, float]) -> float:
    kind = r["op"]
    fadd, fmul, iadd = t["float_add_32"], t["float_mult_32"], t["int_add_32"]
    out_n, in_n = r.get("out_elems", 0), r.get("in_elems", 0)
    if kind in ("conv2d", "dense"):
        per = t["int_mult_8"] + iadd if r.get("int8") else fmul + fadd
        return r["macs"] * per + (out_n * fadd if r.get("bias") else 0.0)
    if kind in ("qconv2d", "qdense"):
        if r.get("bitwise"):
            words = r["bops"] / 64.0
            e = words * (t["binary_word_64"] + iadd)
        elif (r.get("w_bits") or 32) < 32 and (r.get("a_bits") or 32) >= 32:
            e = r["macs"] * fadd                                  # +-alpha weights: adds
        else:
            e = r["macs"] * (fmul + fadd)
        if r.get("out") == "bits":
            e += out_n * iadd                                     # threshold compare
        else:
            e += out_n * (fmul + fadd)                            # scale + bias
        return e
    if kind == "batchnorm":
        return out_n * (fmul + fadd)
    if kind == "maxpool2d":
        taps = r.get("pool_taps", 4)
        if r.get("in_bits_packed"):
            return math.ceil(out_n / 64) * (taps - 1) * t["binary_word_64"]
        return out_n * (taps - 1) * fadd
    if kind in ("avgpool2d", "global_avgpool"):
        return in_n * fadd + out_n * fmul
    if kind in ("relu", "hardtanh", "sign", "add", "prelu"):
        n = in_n if kind == "add" else out_n
        return n * fadd * (2 if kind == "prelu" else 1)
    if kind == "act_quant":
        return out_n * (fmul + 2 * fadd)
    if kind == "upsample":
        return 0.0
    return 0.0                                                    # flatten, concat: copies


def op_energy(r: Mapping[str, Any], t: Mapping[str, float] = TABLE) -> dict[str, float]:
    """``{"compute", "sram", "dram", "total"}`` in pJ for one op record (see
    ``lowbit.runtime.summary.file_summary`` rows: ``op``, ``macs``, ``bops``, ``bitwise``,
    ``w_bits``, ``a_bits``, ``out``, ``weight_bytes``, ``in_bytes`` (list), ``out_bytes``,
    ``in_elems``, ``out_elems``)."""
    c = _compute(r, t)
    s = d = 0.0
    for nbytes in [r.get("weight_bytes", 0)] + list(r.get("in_bytes", [])) + [r.get("out_bytes", 0)]:
        a, b = _mem(nbytes, t)
        s, d = s + a, d + b
    return {"compute": c, "sram": s, "dram": d, "total": c + s + d}


def _int8(r: Mapping[str, Any]) -> dict:
    """An op of a float model as an int8 engine (ONNX Runtime QDQ) runs it: float tensors and
    activations at 1 byte per value, MACs as 8-bit multiplies with 32-bit accumulation."""
    q = dict(r)
    q["weight_bytes"] = r.get("weight_bytes", 0) / 4
    q["in_bytes"] = [b / 4 for b in r.get("in_bytes", [])]
    q["out_bytes"] = r.get("out_bytes", 0) / 4
    q["int8"] = True
    return q


def estimate(rows: list[dict], input_pixels: int = 0,
             table: Mapping[str, float] = TABLE, int8: bool = False) -> dict[str, Any]:
    """Per-op energies (``rows[i]["energy_pj"]`` is set) and totals in pJ and uJ; the input
    normalisation is one SRAM table read per pixel.  ``int8``: price the (float) model as an
    int8 engine would run it (:func:`_int8`)."""
    tot = {"compute": 0.0, "sram": input_pixels * table["sram_32"], "dram": 0.0}
    for r in rows:
        e = op_energy(_int8(r) if int8 else r, table)
        r["energy_pj"] = e["total"]
        for k in tot:
            tot[k] += e[k]
    total = sum(tot.values())
    return {"compute_pj": tot["compute"], "sram_pj": tot["sram"], "dram_pj": tot["dram"],
            "total_pj": total, "total_uj": total / 1e6, "table": dict(table), "source": SOURCE}


def estimate_file(path: str, table: Mapping[str, float] = TABLE,
                  int8: bool = False) -> dict[str, Any]:
    """Energy estimate of a model file (runs ``file_summary`` once)."""
    from lowbit.runtime.summary import file_summary
    s = file_summary(path)
    return estimate(s["rows"], int(np.prod(s["input"])), table, int8)


def estimate_module(model, input_shape, table: Mapping[str, float] = TABLE,
                    int8: bool = False) -> dict[str, Any]:
    """Energy estimate of a torch module (exported to a temporary model file first): the
    baselines' float twins in ``lowbit bench model``."""
    import os
    import tempfile

    from lowbit.train.export import export_model
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "twin.lbm")
        export_model(model, path, None, input_shape=tuple(input_shape))
        return estimate_file(path, table, int8)


def float_estimate(macs: int, params: int, act_bytes: int = 0, int8: bool = False,
                   table: Mapping[str, float] = TABLE) -> dict[str, Any]:
    """A coarse estimate for a baseline known only by its counts (PyTorch / ONNX Runtime fp32:
    MACs x (float mult + add), weights float32; ``int8``: MACs x (8-bit mult + 32-bit add),
    weights 1 byte): weights read once from SRAM or DRAM by total size, ``act_bytes`` of
    activation traffic at SRAM cost."""
    t = table
    per = (t["int_mult_8"] + t["int_add_32"]) if int8 else (t["float_mult_32"] + t["float_add_32"])
    c = macs * per
    s, d = _mem(params * (1 if int8 else 4), t)
    s += _words(act_bytes) * t["sram_32"]
    total = c + s + d
    return {"compute_pj": c, "sram_pj": s, "dram_pj": d, "total_pj": total,
            "total_uj": total / 1e6, "source": SOURCE}


def _uj(pj: float) -> str:
    return f"{pj / 1e6:.3f} uJ" if pj >= 1e5 else f"{pj / 1e3:.2f} nJ"


def format_energy(e: Mapping[str, Any]) -> str:
    """One line: total and its split, with the table's source and cache size."""
    t = e["table"]
    return (f"estimated energy per inference: {_uj(e['total_pj'])} (compute {_uj(e['compute_pj'])}, "
            f"SRAM {_uj(e['sram_pj'])}, DRAM {_uj(e['dram_pj'])}); {e['source']}, tensors > "
            f"{t['cache_bytes'] / 1024:g} KB from DRAM (lowbit.bench.energy)")


def summary_extras(table: Mapping[str, float] = TABLE):
    """The ``extras`` callback of ``lowbit.runtime.summary.summary_command``: sets each row's
    ``energy_pj`` (the table's energy column) and returns the total line."""
    def extras(s: dict) -> list[str]:
        e = estimate(s["rows"], int(np.prod(s["input"])), table)
        s["energy"] = e
        return [format_energy(e)]
    return extras


def checkpoint_lines(target: str, input_size=None, model_args=(),
                     table: Mapping[str, float] = TABLE) -> list[str]:
    """For ``lowbit summary CHECKPOINT|NAME``: export the model to a temporary model file and
    return the energy line and the filter-repetition section of that file, so checkpoints and
    model files are counted the same way.  A model the exporter refuses gets one line saying
    so."""
    import os
    import tempfile

    from lowbit.runtime.repetition import file_repetition, format_repetition
    from lowbit.runtime.summary import file_summary
    from lowbit.train.checkpoint import build_model, builder_kwargs, load_model
    from lowbit.train.export import ExportError, export_model
    if os.path.exists(target):
        model, meta = load_model(target)
        shape = tuple(input_size or meta["input_shape"])
        norm = meta.get("normalization")
        norm = norm.to_dict() if norm is not None else None
    else:
        model = build_model(target, **builder_kwargs(target, model_args, None))
        shape, norm = tuple(input_size or (1, 28, 28)), None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.lbm")
        try:
            export_model(model, path, norm, input_shape=shape)
        except (ExportError, ValueError) as e:
            return [f"energy / filter repetition: not estimated (the model does not export: "
                    f"{str(e).splitlines()[0][:200]})"]
        s = file_summary(path)
        lines = [format_energy(estimate(s["rows"], int(np.prod(s["input"])), table))
                 + " (of the exported model)"]
        rep = format_repetition(file_repetition(path))
    return lines + ([rep] if rep else [])
