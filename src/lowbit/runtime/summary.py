"""Per-op table of a model file (``lowbit summary FILE``): numpy + the runtime, no torch.

For every op of the graph: its kind and name, its output shape (measured: the runtime runs the
graph once on a zero uint8 batch of the input shape), weight / input bits, the bytes its tensors
take in the file, multiply-accumulates (MACs), and binary operations (BOPs = MACs x weight bits
x input bits, for the layers the runtime runs on its bitwise kernels; 0 for float layers).
Totals: bytes of all tensors, of the whole file (header and alignment included), MACs split into
float and bitwise, BOPs.

Each row also carries what an energy estimate needs (``lowbit.bench.energy``): the bytes of
its weights as the runtime holds them (``weight_bytes``: packed sections as stored,
Deep-Compression tensors decoded to float32), of its inputs and output per image
(``in_bytes``, ``out_bytes``: packed bits or float32) and their element counts.  The
command adds an energy column and the binary filter repetition of every binary conv
(``lowbit.runtime.repetition``) through the ``extras`` callback of :func:`summary_command`
(the cost model lives in ``lowbit.bench``, above the runtime).
"""
from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from lowbit import codec
from lowbit.runtime.blas import BlasThreads
from lowbit.runtime.ops import Bits

__all__ = ["value_shapes", "file_summary", "format_file_summary", "summary_command"]

_QLAYERS = ("qconv2d", "qdense")
_FLAT = ("flatten", "dense", "qdense")


def _shape(v: Any, kind: str, in_shapes: list[tuple]) -> tuple:
    """Torch-layout shape of a runtime value (float array or packed Bits)."""
    if not isinstance(v, Bits):
        return tuple(np.shape(v))
    n, h, w, _ = v.words.shape
    if kind in _FLAT or (in_shapes and len(in_shapes[0]) == 2):
        return (n, v.c * h * w)
    return (n, v.c, h, w)


def _nbytes(v: Any) -> int:
    return int(v.words.nbytes if isinstance(v, Bits) else np.asarray(v).nbytes)


def value_shapes(rt, x: np.ndarray, normalized: bool = False,
                 nbytes: dict | None = None) -> dict[str, tuple]:
    """Run ``rt`` (a ``Runtime``) once on ``x`` op by op, as ``Runtime.run`` does, and return
    the shape of every value (graph input and every op's output) in torch's layout;
    ``nbytes`` (a dict) receives each value's size as the runtime holds it (packed or float)."""
    name = rt.inputs[0]["name"]
    vals = {name: rt._input(x, normalized)}
    shapes = {name: tuple(vals[name].shape)}
    if nbytes is not None:
        nbytes[name] = _nbytes(vals[name])
    with BlasThreads(rt._blas_threads):
        for i, op in enumerate(rt.ops):
            ins = [vals[v] for v in op["inputs"]]
            out = rt._step(i, op, ins, rt.threads, None)
            vals[op["outputs"][0]] = out
            shapes[op["outputs"][0]] = _shape(out, op["op"], [shapes[v] for v in op["inputs"]])
            if nbytes is not None:
                nbytes[op["outputs"][0]] = _nbytes(out)
    return shapes


def _section_bytes(section: Any) -> int:
    return int(section.nbytes) if isinstance(section, np.ndarray) else len(section)


def _resident(mf, name: str, stored: int) -> int:
    """Bytes of a tensor as the runtime holds it: Deep-Compression tensors decoded to float32."""
    if mf.entries.get(name, {}).get("enc") == "dc":
        return 4 * int(np.prod(mf.tensor_shape(name)))
    return stored


def _conv_out_shape(op: dict, shapes: dict) -> tuple | None:
    """(OC, OH, OW) a qconv2d computes *before* its fused max-pool (``pool``: the op's
    output is the pooled map, but every pre-pool output costs its MACs); None otherwise."""
    if op["op"] != "qconv2d" or not op.get("pool"):
        return None
    h, w = shapes[op["inputs"][0]][-2:]
    (kh, kw), (sh, sw) = op["kernel"], op.get("stride") or (1, 1)
    ph, pw = op.get("padding") or (0, 0)
    return (int(op["out_channels"]), (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


def _row(i: int, op: dict, rt, mf, shapes: dict, nbytes: dict, seen: set,
         vbytes: dict | None = None) -> dict:
    kind = op["op"]
    out_shape = shapes[op["outputs"][0]]
    tensors = [op[k] for k in codec.graph.OPS[kind][3] if op.get(k)]
    row = {"index": i, "op": kind, "name": op.get("name") or op["outputs"][0],
           "output_shape": list(out_shape[1:]), "w_bits": None, "a_bits": None,
           "bytes": sum(nbytes.get(t, 0) for t in tensors if t not in seen),
           "macs": 0, "bops": 0, "bitwise": False,
           "weight_bytes": sum(_resident(mf, t, nbytes.get(t, 0)) for t in set(tensors)),
           "out_elems": int(np.prod(out_shape[1:])),
           "in_elems": sum(int(np.prod(shapes[v][1:])) for v in op["inputs"])}
    if vbytes is not None:
        row["out_bytes"] = vbytes.get(op["outputs"][0], 0)
        row["in_bytes"] = [vbytes.get(v, 0) for v in op["inputs"]]
    if kind in ("conv2d", "dense"):
        row["bias"] = op.get("bias") is not None
    elif kind == "maxpool2d":
        row["pool_taps"] = int(np.prod(op["kernel"]))
        row["in_bits_packed"] = bool(vbytes is not None and row["in_bytes"][0] * 8
                                     < row["in_elems"] * 32)
    seen.update(tensors)
    if kind in ("conv2d", "dense"):
        w_shape = np.shape(mf.tensor(op["weight"]))       # OIHW / (out, in)
        row.update(w_bits=32, a_bits=32,
                   macs=int(np.prod(out_shape[1:])) * int(np.prod(w_shape[1:])))
    elif kind in _QLAYERS:
        per_out = int(op["in_channels"]) * int(np.prod(op["kernel"]))
        row["macs"] = int(np.prod(_conv_out_shape(op, shapes) or out_shape[1:])) * per_out
        row["w_bits"] = 32 if op["w_levels"] == "float" else int(op["w_bits"])
        row["a_bits"] = int(op["a_bits"]) if op["in"] not in ("float", "dorefa-float") else 32
        row["bitwise"] = rt.layers[op["name"]].kind != "float"
        row["out"] = op.get("out", "float")
        if row["bitwise"]:
            row["bops"] = row["macs"] * row["w_bits"] * row["a_bits"]
    return row


def file_summary(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "model", "input", "rows", "totals", "file_bytes"}`` of a model file (rows:
    one per op; see the module doc for the columns)."""
    from lowbit.runtime.graph import Runtime
    path = os.fspath(path)
    mf = codec.load(path)
    nbytes = {n: _section_bytes(s) for n, s in mf.sections.items()}
    rt = Runtime(path)
    spec = rt.inputs[0]
    shape = tuple(spec.get("shape") or (1, 28, 28))
    dtype = np.uint8 if spec.get("dtype", "uint8") == "uint8" else np.float32
    x = np.zeros((1, *shape), dtype)
    vbytes: dict = {}
    shapes = value_shapes(rt, x, normalized=dtype != np.uint8, nbytes=vbytes)
    seen: set = set()
    rows = [_row(i, op, rt, mf, shapes, nbytes, seen, vbytes) for i, op in enumerate(rt.ops)]
    macs = sum(r["macs"] for r in rows)
    bit_macs = sum(r["macs"] for r in rows if r["bitwise"])
    totals = {"bytes": sum(nbytes.values()), "macs": macs, "bitwise_macs": bit_macs,
              "float_macs": macs - bit_macs, "bops": sum(r["bops"] for r in rows)}
    return {"path": path, "model": mf.meta.get("model"), "input": list(shape),
            "rows": rows, "totals": totals, "file_bytes": os.path.getsize(path)}


def _bits(r: dict) -> str:
    return "" if r["w_bits"] is None else f"{r['w_bits']}/{r['a_bits']}"


def format_file_summary(s: dict) -> str:
    """A plain-text table of :func:`file_summary` (with an energy column in nJ when the rows
    carry ``energy_pj``, as ``lowbit.bench.energy.estimate`` sets it)."""
    energy = all("energy_pj" in r for r in s["rows"]) and s["rows"]
    head = ["#", "op", "name", "output", "W/A bits", "bytes", "MACs", "BOPs"] \
        + (["energy nJ"] if energy else [])
    lines = [[str(r["index"]), r["op"] + ("*" if r["bitwise"] else ""), r["name"],
              "x".join(map(str, r["output_shape"])), _bits(r), f"{r['bytes']:,}",
              f"{r['macs']:,}", f"{r['bops']:,}"]
             + ([f"{r['energy_pj'] / 1e3:,.2f}"] if energy else []) for r in s["rows"]]
    t = s["totals"]
    total = ["", "total", "", "", "", f"{t['bytes']:,}", f"{t['macs']:,}", f"{t['bops']:,}"] \
        + ([f"{sum(r['energy_pj'] for r in s['rows']) / 1e3:,.2f}"] if energy else [])
    widths = [max(len(c[i]) for c in [head, total, *lines]) for i in range(len(head))]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i < 5 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(fmt(head))
    model = s["model"] if isinstance(s["model"], dict) else {}
    title = (f"{s['path']}: {model.get('name', 'model')} {model.get('kwargs') or ''}".strip()
             + f"; input {'x'.join(map(str, s['input']))} uint8")
    notes = [f"file {s['file_bytes']:,} bytes (tensors {t['bytes']:,}, header and alignment "
             f"{s['file_bytes'] - t['bytes']:,}); MACs {t['macs']:,} = float "
             f"{t['float_macs']:,} + bitwise {t['bitwise_macs']:,}",
             "* = runs on the bitwise kernels (BOPs = MACs x weight bits x input bits); "
             "W/A bits 32 = float"]
    return "\n".join([title, fmt(head), rule, *map(fmt, lines), rule, fmt(total), *notes])


def summary_command(path: str, extras=None) -> int:
    """``lowbit summary FILE``: print the table, then the binary filter repetition of its
    binary convs; ``extras(summary) -> list of lines`` may annotate the rows first (the CLI
    passes the energy estimate of ``lowbit.bench.energy``).  One ``lowbit summary: error:``
    line on bad input."""
    from lowbit.runtime.repetition import file_repetition, format_repetition
    try:
        s = file_summary(path)
        more = list(extras(s)) if extras is not None else []
        rep = format_repetition(file_repetition(path))
    except (codec.FormatError, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lowbit summary: error: {msg}", file=sys.stderr)
        return 2
    print(format_file_summary(s))
    for line in more + ([rep] if rep else []):
        print(line)
    return 0
