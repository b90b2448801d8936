"""The graph of a model file: its schema, its version, and validation.  numpy-free, torch-free.

``lowbit.train`` writes graphs, ``lowbit.runtime`` reads them; both go through this module, so
the schema lives in one place.

Version 2 (written today) is a DAG of named values::

    {"version": 2,
     "inputs":  [{"name": "input", "shape": [C, H, W], "dtype": "uint8",
                  "normalization": {"mean": m | [m_c], "std": s | [s_c], "scale": 255.0}}],
     "ops":     [{"op": KIND, "name": NAME?, "inputs": [VALUE, ...], "outputs": [VALUE],
                  ...attributes of KIND...}, ...],        # in execution order
     "outputs": [VALUE, ...]}

Every value is produced once (a graph input or one op's output) before it is used; a value may
feed several ops (branches), and ``add`` / ``concat`` join branches (residuals, heads).  Values
are float32 in torch's layout (NCHW or (N, F)); a runtime may hold ±1 values as packed bits.

Ops (``OPS`` lists each kind's arity and attributes):

    conv2d      weight OIHW, bias|null, stride, padding             torch Conv2d (groups 1)
    dense       weight (out, in), bias|null                          torch Linear
    qconv2d / qdense   a lowbit quantized layer (see lowbit.runtime.ops.QLayer): input mode
                "in" (sign|xnor|uint8|dorefa|dorefa-float|float), packed weight levels, scales,
                and either a float output or ``out: "bits"`` with folded integer thresholds
    batchnorm   gamma, beta, mean, var, eps                          torch eval BatchNorm
    maxpool2d   kernel, stride                                       (no padding)
    avgpool2d   kernel, stride, padding, count_include_pad           torch AvgPool2d
    global_avgpool                                                   (N, C, H, W) -> (N, C, 1, 1)
    upsample    scale [sh, sw]                                       nearest neighbour
    relu | hardtanh (min, max) | prelu (weight: NAME, 1 or C slopes)
    sign        x >= 0 -> +1 else -1 (BNN's activation; held as packed bits)
    act_quant   bits: DoReFa's k-bit activation round(clip(x, 0, 1) (2^k - 1)) / (2^k - 1)
    flatten     (N, ...) -> (N, F)
    add         elementwise sum of 2+ inputs of one shape (residual shortcuts)
    concat      along the channel axis (axis 1) of 2+ inputs

Version 1 (written before; still read) was a list of ops applied in turn to one value, with one
``input``.  :func:`parse` upgrades it to version 2 in memory.  An unknown version is refused.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from lowbit.codec.container import FormatError

__all__ = ["VERSION", "SUPPORTED", "OPS", "parse", "upgrade_v1", "consumers", "new_graph"]

VERSION = 2
SUPPORTED = (1, 2)

_Q_ATTRS = ("name", "in", "a_bits", "w_bits", "weight", "w_levels", "integer_acc", "in_channels",
            "out_channels", "kernel", "stride", "padding", "pad_value", "out")
# kind -> (min inputs, max inputs (None: any), required attributes, tensor-name attributes)
OPS: dict[str, tuple[int, int | None, tuple[str, ...], tuple[str, ...]]] = {
    "conv2d": (1, 1, ("weight", "stride", "padding"), ("weight", "bias")),
    "dense": (1, 1, ("weight",), ("weight", "bias")),
    "qconv2d": (1, 1, _Q_ATTRS, ("weight", "sw", "bias", "threshold", "flip")),
    "qdense": (1, 1, _Q_ATTRS, ("weight", "sw", "bias", "threshold", "flip")),
    "batchnorm": (1, 1, ("gamma", "beta", "mean", "var", "eps"), ("gamma", "beta", "mean", "var")),
    "maxpool2d": (1, 1, ("kernel", "stride"), ()),
    "avgpool2d": (1, 1, ("kernel", "stride", "padding"), ()),
    "global_avgpool": (1, 1, (), ()),
    "upsample": (1, 1, ("scale",), ()),
    "relu": (1, 1, (), ()),
    "hardtanh": (1, 1, ("min", "max"), ()),
    "prelu": (1, 1, ("weight",), ("weight",)),
    "sign": (1, 1, (), ()),
    "act_quant": (1, 1, ("bits",), ()),
    "flatten": (1, 1, (), ()),
    "add": (2, None, (), ()),
    "concat": (2, None, (), ()),
}
DTYPES = ("uint8", "float32")
IN_MODES = ("sign", "xnor", "uint8", "dorefa", "dorefa-float", "float")
W_LEVELS = ("binary", "ternary", "planes", "float")


def new_graph(inputs: list[dict], ops: list[dict], outputs: list[str]) -> dict[str, Any]:
    return {"version": VERSION, "inputs": inputs, "ops": ops, "outputs": outputs}


def upgrade_v1(graph: Mapping[str, Any], where: str = "graph") -> dict[str, Any]:
    """A version-1 graph (one chain of ops on one value) as a version-2 DAG."""
    ops = graph.get("ops")
    if not isinstance(ops, list):
        raise FormatError(f"{where}: field 'ops': expected a list, got {type(ops).__name__}")
    spec = graph.get("input") or {"shape": None, "dtype": "uint8"}
    if not isinstance(spec, dict):
        raise FormatError(f"{where}: field 'input': expected an object")
    inp = dict(spec, name="input")
    prev, out = "input", []
    for i, op in enumerate(ops):
        if not isinstance(op, dict):
            raise FormatError(f"{where}: op {i}: expected an object, got {type(op).__name__}")
        v = f"v{i}"
        out.append(dict(op, inputs=[prev], outputs=[v]))
        prev = v
    return new_graph([inp], out, [prev])


def _ints(v: Any, n: int, lo: int) -> bool:
    return (isinstance(v, list) and len(v) == n
            and all(isinstance(a, int) and not isinstance(a, bool) and a >= lo for a in v))


def _check_input(where: str, spec: Any, names: set) -> None:
    if not isinstance(spec, dict):
        raise FormatError(f"{where}: expected an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name or name in names:
        raise FormatError(f"{where}: field 'name': expected a new non-empty string, got {name!r}")
    shape = spec.get("shape")
    if shape is not None and not (isinstance(shape, list) and 1 <= len(shape) <= 3
                                  and _ints(shape, len(shape), 1)):
        raise FormatError(f"{where}: field 'shape': expected [C, H, W] (or [F]) of positive "
                          f"integers, got {shape!r}")
    if spec.get("dtype", "uint8") not in DTYPES:
        raise FormatError(f"{where}: field 'dtype': expected one of {DTYPES}, "
                          f"got {spec.get('dtype')!r}")
    norm = spec.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
            raise FormatError(f"{where}: field 'normalization': expected an object with "
                              f"'mean' and 'std', got {norm!r}")
        chans = shape[0] if shape and len(shape) == 3 else None
        for k in ("mean", "std"):
            v = norm[k]
            vals = v if isinstance(v, list) else [v]
            if not vals or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                   for a in vals):
                raise FormatError(f"{where}: normalization '{k}': expected a number or a list "
                                  f"of numbers, got {v!r}")
            if isinstance(v, list) and chans is not None and len(v) not in (1, chans):
                raise FormatError(f"{where}: normalization '{k}': {len(v)} values for "
                                  f"{chans} input channels")
        stds = norm["std"] if isinstance(norm["std"], list) else [norm["std"]]
        if not all(s > 0 for s in stds):
            raise FormatError(f"{where}: normalization 'std': expected positive values, "
                              f"got {norm['std']!r}")


def _check_attrs(where: str, op: dict) -> None:
    kind = op["op"]
    pairs = {"kernel": 1, "stride": 1, "padding": 0, "scale": 1}
    for key, lo in pairs.items():
        if key in op and op[key] is not None and not _ints(op[key], 2, lo):
            raise FormatError(f"{where}: field {key!r}: expected two integers >= {lo}, "
                              f"got {op[key]!r}")
    if kind == "batchnorm" and not (isinstance(op["eps"], (int, float)) and op["eps"] > 0):
        raise FormatError(f"{where}: field 'eps': expected a positive number, got {op['eps']!r}")
    if kind == "act_quant" and not (isinstance(op["bits"], int) and 1 <= op["bits"] <= 16):
        raise FormatError(f"{where}: field 'bits': expected an integer 1..16, got {op['bits']!r}")
    if kind == "hardtanh" and not (isinstance(op["min"], (int, float))
                                   and isinstance(op["max"], (int, float))
                                   and op["min"] < op["max"]):
        raise FormatError(f"{where}: fields 'min', 'max': expected numbers min < max")
    if kind in ("qconv2d", "qdense"):
        for key in ("in_channels", "out_channels", "a_bits", "w_bits"):
            v = op[key]
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise FormatError(f"{where}: field {key!r}: expected a positive integer, got {v!r}")
        for key, known in (("in", IN_MODES), ("w_levels", W_LEVELS)):
            if op[key] not in known:
                raise FormatError(f"{where}: field {key!r}: expected one of {', '.join(known)}, "
                                  f"got {op[key]!r}")
        if op["out"] not in ("float", "bits"):
            raise FormatError(f"{where}: field 'out': expected 'float' or 'bits', "
                              f"got {op['out']!r}")
        if op["out"] == "bits" and (op.get("threshold") is None or op.get("flip") is None):
            raise FormatError(f"{where}: out 'bits' needs fields 'threshold' and 'flip'")


def _check_op(where: str, op: Any, defined: set, tensors: Iterable[str] | None) -> None:
    if not isinstance(op, dict):
        raise FormatError(f"{where}: expected an object, got {type(op).__name__}")
    kind = op.get("op")
    if kind not in OPS:
        raise FormatError(f"{where}: field 'op': unknown op {kind!r} (this lowbit knows: "
                          f"{', '.join(OPS)})")
    lo, hi, required, tensor_attrs = OPS[kind]
    ins, outs = op.get("inputs"), op.get("outputs")
    if not isinstance(ins, list) or not all(isinstance(v, str) for v in ins) \
            or len(ins) < lo or (hi is not None and len(ins) > hi):
        want = f"{lo}" if hi == lo else f"{lo} or more"
        raise FormatError(f"{where} ({kind}): field 'inputs': expected a list of {want} value "
                          f"names, got {ins!r}")
    for v in ins:
        if v not in defined:
            raise FormatError(f"{where} ({kind}): input {v!r} is not defined by a graph input "
                              f"or an earlier op")
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], str) or not outs[0]:
        raise FormatError(f"{where} ({kind}): field 'outputs': expected one value name, "
                          f"got {outs!r}")
    if outs[0] in defined:
        raise FormatError(f"{where} ({kind}): output {outs[0]!r} is already defined")
    missing = [k for k in required if k not in op]
    if missing:
        raise FormatError(f"{where} ({kind}): missing field(s) {', '.join(map(repr, missing))}")
    if tensors is not None:
        for k in tensor_attrs:
            name = op.get(k)
            if name is not None and (not isinstance(name, str) or name not in tensors):
                raise FormatError(f"{where} ({kind}): field {k!r}: no tensor {name!r} in the file")
    _check_attrs(where, op)


def parse(graph: Any, where: str = "graph", tensors: Iterable[str] | None = None) -> dict:
    """Check ``graph`` (any supported version) and return it as a version-2 graph.

    ``tensors``: the names of the file's tensors, to check every reference.  Raises
    :class:`~lowbit.codec.container.FormatError` naming the op and field on anything that
    does not make sense: an unknown version or op, a value used before it is defined or
    defined twice, a wrong number of inputs, a missing or malformed attribute, a dangling
    tensor name, an undefined graph output."""
    if not isinstance(graph, dict):
        raise FormatError(f"{where}: expected an object, got {type(graph).__name__}")
    version = graph.get("version", 1)
    if version not in SUPPORTED:
        raise FormatError(f"{where}: version {version!r} is not supported by this lowbit "
                          f"(it reads versions {', '.join(map(str, SUPPORTED))}); the file was "
                          f"written by a newer lowbit: upgrade lowbit to run it")
    g = upgrade_v1(graph, where) if version == 1 else dict(graph)
    tensors = set(tensors) if tensors is not None else None
    inputs, ops, outputs = g.get("inputs"), g.get("ops"), g.get("outputs")
    if not isinstance(inputs, list) or not inputs:
        raise FormatError(f"{where}: field 'inputs': expected a non-empty list")
    if not isinstance(ops, list):
        raise FormatError(f"{where}: field 'ops': expected a list")
    defined: set = set()
    for i, spec in enumerate(inputs):
        _check_input(f"{where}: input {i}", spec, defined)
        defined.add(spec["name"])
    names: set = set()
    for i, op in enumerate(ops):
        label = f"{where}: op {i}" + (f" {op.get('name')!r}" if isinstance(op, dict)
                                      and op.get("name") else "")
        _check_op(label, op, defined, tensors)
        name = op.get("name")
        if name is not None:
            if not isinstance(name, str) or name in names:
                raise FormatError(f"{label}: field 'name': expected a unique string")
            names.add(name)
        defined.add(op["outputs"][0])
    if not isinstance(outputs, list) or not outputs \
            or not all(isinstance(v, str) and v in defined for v in outputs):
        raise FormatError(f"{where}: field 'outputs': expected a non-empty list of defined "
                          f"values, got {outputs!r}")
    g["version"] = VERSION
    return g


def consumers(graph: Mapping[str, Any]) -> dict[str, list[int]]:
    """value -> indices of the ops that read it (a graph output counts as index -1)."""
    out: dict[str, list[int]] = {}
    for i, op in enumerate(graph["ops"]):
        for v in op["inputs"]:
            out.setdefault(v, []).append(i)
    for v in graph["outputs"]:
        out.setdefault(v, []).append(-1)
    return out
