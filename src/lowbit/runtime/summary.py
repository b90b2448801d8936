"""Per-op table of a model file (``lowbit summary FILE``): numpy + the runtime, no torch.

For every op of the graph: its kind and name, its output shape (measured: the runtime runs the
graph once on a zero uint8 batch of the input shape), weight / input bits, the bytes its tensors
take in the file, multiply-accumulates (MACs), and binary operations (BOPs = MACs x weight bits
x input bits, for the layers the runtime runs on its bitwise kernels; 0 for float layers).
Totals: bytes of all tensors, of the whole file (header and alignment included), MACs split into
float and bitwise, BOPs.
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


def value_shapes(rt, x: np.ndarray, normalized: bool = False) -> dict[str, tuple]:
    """Run ``rt`` (a ``Runtime``) once on ``x`` op by op, as ``Runtime.run`` does, and return
    the shape of every value (graph input and every op's output) in torch's layout."""
    name = rt.inputs[0]["name"]
    vals = {name: rt._input(x, normalized)}
    shapes = {name: tuple(vals[name].shape)}
    with BlasThreads(rt._blas_threads):
        for i, op in enumerate(rt.ops):
            ins = [vals[v] for v in op["inputs"]]
            out = rt._step(i, op, ins, rt.threads, None)
            vals[op["outputs"][0]] = out
            shapes[op["outputs"][0]] = _shape(out, op["op"], [shapes[v] for v in op["inputs"]])
    return shapes


def _section_bytes(section: Any) -> int:
    return int(section.nbytes) if isinstance(section, np.ndarray) else len(section)


def _row(i: int, op: dict, rt, mf, shapes: dict, nbytes: dict, seen: set) -> dict:
    kind = op["op"]
    out_shape = shapes[op["outputs"][0]]
    tensors = [op[k] for k in codec.graph.OPS[kind][3] if op.get(k)]
    row = {"index": i, "op": kind, "name": op.get("name") or op["outputs"][0],
           "output_shape": list(out_shape[1:]), "w_bits": None, "a_bits": None,
           "bytes": sum(nbytes.get(t, 0) for t in tensors if t not in seen),
           "macs": 0, "bops": 0, "bitwise": False}
    seen.update(tensors)
    if kind in ("conv2d", "dense"):
        w_shape = np.shape(mf.tensor(op["weight"]))       # OIHW / (out, in)
        row.update(w_bits=32, a_bits=32,
                   macs=int(np.prod(out_shape[1:])) * int(np.prod(w_shape[1:])))
    elif kind in _QLAYERS:
        per_out = int(op["in_channels"]) * int(np.prod(op["kernel"]))
        row["macs"] = int(np.prod(out_shape[1:])) * per_out
        row["w_bits"] = 32 if op["w_levels"] == "float" else int(op["w_bits"])
        row["a_bits"] = int(op["a_bits"]) if op["in"] not in ("float", "dorefa-float") else 32
        row["bitwise"] = rt.layers[op["name"]].kind != "float"
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
    shapes = value_shapes(rt, x, normalized=dtype != np.uint8)
    seen: set = set()
    rows = [_row(i, op, rt, mf, shapes, nbytes, seen) for i, op in enumerate(rt.ops)]
    macs = sum(r["macs"] for r in rows)
    bit_macs = sum(r["macs"] for r in rows if r["bitwise"])
    totals = {"bytes": sum(nbytes.values()), "macs": macs, "bitwise_macs": bit_macs,
              "float_macs": macs - bit_macs, "bops": sum(r["bops"] for r in rows)}
    return {"path": path, "model": mf.meta.get("model"), "input": list(shape),
            "rows": rows, "totals": totals, "file_bytes": os.path.getsize(path)}


def _bits(r: dict) -> str:
    return "" if r["w_bits"] is None else f"{r['w_bits']}/{r['a_bits']}"


def format_file_summary(s: dict) -> str:
    """A plain-text table of :func:`file_summary`."""
    head = ["#", "op", "name", "output", "W/A bits", "bytes", "MACs", "BOPs"]
    lines = [[str(r["index"]), r["op"] + ("*" if r["bitwise"] else ""), r["name"],
              "x".join(map(str, r["output_shape"])), _bits(r), f"{r['bytes']:,}",
              f"{r['macs']:,}", f"{r['bops']:,}"] for r in s["rows"]]
    t = s["totals"]
    total = ["", "total", "", "", "", f"{t['bytes']:,}", f"{t['macs']:,}", f"{t['bops']:,}"]
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


def summary_command(path: str) -> int:
    """``lowbit summary FILE``: print the table; one ``lowbit summary: error:`` line on bad
    input."""
    try:
        s = file_summary(path)
    except (codec.FormatError, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lowbit summary: error: {msg}", file=sys.stderr)
        return 2
    print(format_file_summary(s))
    return 0
