"""A model file's graph lowered to the steps of the exported C function (numpy only).

Each step is one call of a csrc/mcu kernel with its constants (weights in flash, a parameter
struct); its operands are values: the caller's uint8 input, float32 CHW buffers, +-1 bit
buffers (layouts in csrc/mcu/lowbit_mcu.h) and the caller's float output.  Values are the
graph's, plus conversions the Python runtime does implicitly (uint8 -> float through the
normalisation table, float -> sign bits, bits -> +-1 floats).  ``flatten`` and ``sign`` of
bits are aliases (no step).  A float conv followed only by a max pool computes the pooled
output directly (the conv output is never stored); a BatchNorm read only by signs emits bits
through exact float thresholds, as the Python runtime does.

Supported ops and modes are those of ``layers``; anything else raises ``Unsupported`` naming
the op.  The numbers equal ``lowbit.runtime.Runtime(path, executor="python")``: the binary
layers' integer accumulators exactly, float layers to rounding (their sums run in another
order than numpy's BLAS).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

from lowbit import codec
from lowbit.codec.container import FormatError

__all__ = ["Unsupported", "Value", "Step", "Lowered", "lower"]


class Unsupported(ValueError):
    """The model uses something the C export does not implement (the message names it)."""


@dataclass
class Value:
    name: str
    kind: str                   # "u8" (the input), "f" (float32 CHW), "b" (bits), "out"
    shape: tuple                # (C, H, W) or (F,)
    root: str = ""              # the value whose memory this is (aliases); "" = itself
    pstride: int = 0            # bits: bits per pixel in memory (32 * words, or C)

    @property
    def c(self) -> int:
        return self.shape[0]

    @property
    def npix(self) -> int:
        return math.prod(self.shape[1:]) if len(self.shape) == 3 else 1

    @property
    def words(self) -> int:
        """bits: uint32 words of the value in its layout."""
        return ((self.npix - 1) * self.pstride + self.c + 31) // 32

    @property
    def nbytes(self) -> int:
        if self.kind == "f":
            return 4 * math.prod(self.shape)
        return 4 * self.words if self.kind == "b" else 0


@dataclass
class Step:
    note: str                            # a C comment: op, shapes
    reads: list[str]
    writes: str
    call: Callable[[Callable[[str], str]], str]   # ptr(value name) -> C expression
    decls: list[str] = field(default_factory=list)


@dataclass
class Lowered:
    values: dict[str, Value]
    steps: list[Step]
    input: Value
    output: Value
    flash_consts: int = 0                # bytes of the constants (weights, tables, params)
    kernels: set = field(default_factory=set)
    traced: list = field(default_factory=list)   # binary layer names by LOWBIT_TRACE id


def cname(text: str) -> str:
    """A C identifier from a graph name."""
    s = re.sub(r"\W", "_", text)
    return s if re.match(r"[A-Za-z_]", s) else "v_" + s


def _padded_values(graph: dict) -> set[str]:
    """Graph values that a binary conv reads: their bits must be word-aligned per pixel.  The
    mark goes back through the aliases (flatten, sign) to the value that owns the memory."""
    producer = {op["outputs"][0]: op for op in graph["ops"]}
    marked: set[str] = set()
    for op in graph["ops"]:
        if op["op"] == "qconv2d" and codec.graph.bitwise_kind(op) != "float":
            v = op["inputs"][0]
            while True:
                marked.add(v)
                p = producer.get(v)
                if p is None or p["op"] not in ("flatten", "sign"):
                    break
                v = p["inputs"][0]
    return marked


def lower(path: str) -> Lowered:
    """Load, check and lower the model file at ``path`` (FormatError / Unsupported)."""
    from lowbit.cexport.layers import Builder
    mf = codec.load(path)
    where = f"{path}: graph"
    graph = codec.graph.parse(mf.graph, where, mf.entries)
    shapes = codec.shapes.infer(graph, mf.tensor_shape, where)
    for name, e in mf.entries.items():
        enc = e.get("enc") if isinstance(e, dict) else None
        if enc not in ("raw", "packed"):
            raise Unsupported(f"{path}: tensor {name!r} is {enc!r}-encoded (Deep Compression: "
                              f"codebook + sparse index + Huffman); export-c writes dense "
                              f"const arrays of float, packed bits and thresholds only and has "
                              f"no decoder for it: run the file with lowbit run / lowbit-run")
    if len(graph["inputs"]) != 1 or len(graph["outputs"]) != 1:
        raise Unsupported(f"{where}: {len(graph['inputs'])} inputs and {len(graph['outputs'])} "
                          f"outputs; export-c writes one function of one uint8 image and one "
                          f"float output")
    spec = graph["inputs"][0]
    if spec.get("dtype", "uint8") != "uint8" or not spec.get("shape"):
        raise Unsupported(f"{where}: the input must be uint8 with a stored shape (got dtype "
                          f"{spec.get('dtype')!r}, shape {spec.get('shape')!r})")
    b = Builder(mf, graph, shapes, _padded_values(graph), path)
    return b.run()
