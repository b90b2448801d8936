"""Shape inference through a version-2 graph: every value's shape from the graph input's, with
every op's tensors and attributes checked against what reaches it (numpy-free).

``infer(graph, tensor_shape, where)`` returns ``{value: shape}`` (shapes without the batch
axis: (C, H, W) or (F,)) or raises :class:`FormatError` naming the op and the field: a conv
whose ``in_channels`` is not its input's channel count, a weight / scale / bias / threshold of
the wrong size, a window larger than its (padded) input, an ``add`` of different shapes...
``tensor_shape(name)`` gives a tensor's logical shape (``lowbit.codec.model.ModelFile``'s
``tensor_shape``).  Called by the runtime at load, so an edited file never runs.  When
``tensor_shape`` is a ModelFile's bound method, the values that must satisfy more than a shape
are checked too (``ModelFile.check_op_values``: 0/1 flips, int32 thresholds, variances >= 0).
"""
from __future__ import annotations

from math import prod
from typing import Any, Callable, Mapping

from lowbit.codec.container import FormatError

__all__ = ["infer", "MAX_ELEMENTS"]

Shape = tuple

# The most values one tensor or one value (per image) may have: 2^28 (1 GiB as float32),
# far above any model lowbit targets, and far below where the kernels' int32 indices or
# numpy's sizes would wrap.  A file that declares more is refused before anything is
# allocated (a sparse Deep-Compression tensor can declare any size in a few bytes).  Tests and
# fuzzers may lower it (lowbit.codec.shapes.MAX_ELEMENTS = ...); compressed.decode reads it too.
MAX_ELEMENTS = 1 << 28


def _window(where: str, size: int, k: int, s: int, p: int, axis: str) -> int:
    out = (size + 2 * p - k) // s + 1
    if k > size + 2 * p or out < 1:
        raise FormatError(f"{where}: kernel {k} (stride {s}, padding {p}) does not fit the "
                          f"input's {axis} {size}")
    return out


def _spatial(where: str, x: Shape, op: dict, pad: bool = True) -> tuple[int, int]:
    if len(x) != 3:
        raise FormatError(f"{where}: input has shape {x}, expected (C, H, W)")
    (kh, kw), (sh, sw) = op["kernel"], op.get("stride") or op["kernel"]
    ph, pw = (op.get("padding") or [0, 0]) if pad else (0, 0)
    return _window(where, x[1], kh, sh, ph, "height"), _window(where, x[2], kw, sw, pw, "width")


def _vector(where: str, field: str, shape: Shape | None, n: int, allow_scalar: bool = False) -> None:
    """A per-channel vector: shape (n,) (or one value, () / (1,), where a scalar applies)."""
    if shape is None:
        return
    size = prod(shape)
    if not (size == n or (allow_scalar and size == 1)):
        want = f"{n}" + (" (or 1)" if allow_scalar else "")
        raise FormatError(f"{where}: field {field!r}: {size} values, expected {want}")
    if len(shape) > 1:
        raise FormatError(f"{where}: field {field!r}: shape {shape}, expected a vector ({n},)")


def _conv(where: str, x: Shape, op: dict, ts: Callable) -> Shape:
    w = ts(op["weight"])
    if len(w) != 4:
        raise FormatError(f"{where}: field 'weight': shape {w}, expected (O, C, KH, KW)")
    if len(x) != 3 or x[0] != w[1]:
        raise FormatError(f"{where}: field 'weight': expects {w[1]} input channels, the input "
                          f"has shape {x}")
    oh, ow = _spatial(where, x, dict(op, kernel=list(w[2:])))
    _vector(where, "bias", ts(op.get("bias")), w[0])
    return (w[0], oh, ow)


def _dense(where: str, x: Shape, op: dict, ts: Callable) -> Shape:
    w = ts(op["weight"])
    if len(w) != 2 or prod(x) != w[1]:
        raise FormatError(f"{where}: field 'weight': shape {w}, expected (out, {prod(x)}) for "
                          f"an input of shape {x}")
    _vector(where, "bias", ts(op.get("bias")), w[0])
    return (w[0],)


def _qlayer(where: str, x: Shape, op: dict, ts: Callable) -> Shape:
    c, oc, (kh, kw) = op["in_channels"], op["out_channels"], op["kernel"]
    w = ts(op["weight"])
    if tuple(w) != (oc, kh, kw, c):
        raise FormatError(f"{where}: field 'weight': shape {w}, expected (out_channels, KH, KW, "
                          f"in_channels) = {(oc, kh, kw, c)}")
    for f in ("sw",):
        _vector(where, f, ts(op.get(f)), oc, allow_scalar=True)
    for f in ("bias", "threshold", "flip"):
        _vector(where, f, ts(op.get(f)), oc)
    if op["op"] == "qdense":
        if prod(x) != c * kh * kw:
            raise FormatError(f"{where}: field 'in_channels': the layer reads {c * kh * kw} "
                              f"features, the input has shape {x}")
        return (oc,)
    if len(x) != 3 or x[0] != c:
        raise FormatError(f"{where}: field 'in_channels': {c}, the input has shape {x}")
    oh, ow = _spatial(where, x, op)
    pool = op.get("pool")
    if pool:
        oh, ow = _spatial(where + " pool", (oc, oh, ow), pool, pad=False)
    return (oc, oh, ow)


def _same_channels(where: str, x: Shape, op: dict, ts: Callable, fields) -> Shape:
    for f in fields:
        _vector(where, f, ts(op.get(f)), x[0], allow_scalar=(op["op"] == "prelu"))
    return x


def _join(where: str, xs: list, op: dict) -> Shape:
    if op["op"] == "add":
        if any(s != xs[0] for s in xs):
            raise FormatError(f"{where}: adds values of shapes {xs}; they must be equal")
        return xs[0]
    if any(len(s) != len(xs[0]) or s[1:] != xs[0][1:] for s in xs):
        raise FormatError(f"{where}: concatenates shapes {xs}; all but the channel axis must "
                          f"be equal")
    return (sum(s[0] for s in xs),) + tuple(xs[0][1:])


def _step(where: str, op: dict, xs: list, ts: Callable) -> Shape:
    kind, x = op["op"], xs[0]
    if kind == "conv2d":
        return _conv(where, x, op, ts)
    if kind == "dense":
        return _dense(where, x, op, ts)
    if kind in ("qconv2d", "qdense"):
        return _qlayer(where, x, op, ts)
    if kind in ("add", "concat"):
        return _join(where, xs, op)
    if kind == "flatten":
        return (prod(x),)
    if kind in ("batchnorm", "prelu"):
        fields = ("gamma", "beta", "mean", "var") if kind == "batchnorm" else ("weight",)
        return _same_channels(where, x, op, ts, fields)
    if kind in ("maxpool2d", "avgpool2d"):
        return (x[0],) + _spatial(where, x, op, pad=(kind == "avgpool2d"))
    if kind == "global_avgpool":
        if len(x) != 3:
            raise FormatError(f"{where}: input has shape {x}, expected (C, H, W)")
        return (x[0], 1, 1)
    if kind == "upsample":
        if len(x) != 3:
            raise FormatError(f"{where}: input has shape {x}, expected (C, H, W)")
        return (x[0], x[1] * op["scale"][0], x[2] * op["scale"][1])
    return x                                      # elementwise: relu, hardtanh, sign, act_quant


def infer(graph: Mapping[str, Any], tensor_shape: Callable[[str], tuple], where: str = "graph"
          ) -> dict[str, Shape]:
    """``{value: shape}`` of a parsed version-2 graph (see the module docstring)."""
    shapes: dict[str, Shape] = {}
    for spec in graph["inputs"]:
        if spec.get("shape") is None:
            raise FormatError(f"{where}: input {spec['name']!r}: field 'shape' is missing")
        shapes[spec["name"]] = _bounded(f"{where}: input {spec['name']!r}", "shape",
                                        tuple(spec["shape"]))
    label = where

    def ts(name):
        if name is None:
            return None
        return _bounded(label, f"tensor {name!r}", tuple(tensor_shape(name)))

    check_values = getattr(getattr(tensor_shape, "__self__", None), "check_op_values", None)
    for i, op in enumerate(graph["ops"]):
        label = f"{where}: op {i}" + (f" {op['name']!r}" if op.get("name") else "") + \
            f" ({op['op']})"
        shapes[op["outputs"][0]] = _bounded(
            label, "output", _step(label, op, [shapes[v] for v in op["inputs"]], ts))
        if check_values is not None:
            check_values(label, op)
    return shapes


def _bounded(where: str, what: str, shape: Shape) -> Shape:
    if prod(shape) > MAX_ELEMENTS:
        raise FormatError(f"{where}: {what} has shape {shape}: {prod(shape)} values, more than "
                          f"the {MAX_ELEMENTS} this lowbit allows")
    return shape
