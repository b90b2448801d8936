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

import math
from typing import Any, Iterable, Mapping

from lowbit.codec.container import FormatError

__all__ = ["VERSION", "SUPPORTED", "OPS", "parse", "upgrade_v1", "consumers", "new_graph",
           "bitwise_kind"]

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


def _short(v: Any, n: int = 120) -> str:
    """repr of a header value for an error message, cut to ``n`` characters."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


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


I32 = 2**31 - 1     # sizes, strides, paddings, scales: what the kernels' int indices hold


def _ints(v: Any, n: int, lo: int, hi: int = I32) -> bool:
    return (isinstance(v, list) and len(v) == n
            and all(isinstance(a, int) and not isinstance(a, bool) and lo <= a <= hi for a in v))


def _int(v: Any, lo: int, hi: int = I32) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _num(v: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bitwise_kind(op: Mapping[str, Any]) -> str:
    """How a checked qconv2d / qdense op runs: ``"binary"`` / ``"ternary"`` (±1 inputs on the
    XNOR kernels), ``"planes-binary"`` / ``"planes-planes"`` (bit-plane inputs), or
    ``"float"`` (numpy; the weights are decoded).  The runtime's ``QLayer`` makes the same
    choice; an ``out: "bits"`` threshold stage needs one of the bitwise kinds."""
    wl, mode = op["w_levels"], op["in"]
    planes_in = mode in ("uint8", "dorefa") and op["a_bits"] <= 8
    if mode in ("sign", "xnor") and wl in ("binary", "ternary"):
        return wl
    if planes_in and wl == "binary":
        return "planes-binary"
    if planes_in and wl == "planes" and op["w_bits"] <= 8:
        return "planes-planes"
    return "float"


def _check_input(where: str, spec: Any, names: set) -> None:
    if not isinstance(spec, dict):
        raise FormatError(f"{where}: expected an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name or name in names:
        raise FormatError(f"{where}: field 'name': expected a new non-empty string, got {name!r}")
    shape = spec.get("shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) in (1, 3)
                                  and _ints(shape, len(shape), 1)):
        raise FormatError(f"{where}: field 'shape': expected [C, H, W] (or [F]) of positive "
                          f"integers, got {_short(shape)}")
    if spec.get("dtype", "uint8") not in DTYPES:
        raise FormatError(f"{where}: field 'dtype': expected one of {DTYPES}, "
                          f"got {spec.get('dtype')!r}")
    norm = spec.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
            raise FormatError(f"{where}: field 'normalization': expected an object with "
                              f"'mean' and 'std', got {norm!r}")
        chans = shape[0] if shape and len(shape) == 3 else 1
        for k in ("mean", "std"):
            v = norm[k]
            vals = v if isinstance(v, list) else [v]
            if not vals or not all(_num(a) for a in vals):
                raise FormatError(f"{where}: normalization '{k}': expected a finite number or "
                                  f"a list of them, got {_short(v)}")
            if isinstance(v, list) and len(v) not in (1, chans):
                raise FormatError(f"{where}: normalization '{k}': {len(v)} values for "
                                  f"{chans} input channels")
        stds = norm["std"] if isinstance(norm["std"], list) else [norm["std"]]
        if not all(s > 0 for s in stds):
            raise FormatError(f"{where}: normalization 'std': expected positive values, "
                              f"got {_short(norm['std'])}")
        if "scale" in norm and not (_num(norm["scale"]) and norm["scale"] > 0):
            raise FormatError(f"{where}: normalization 'scale': expected a positive number, "
                              f"got {_short(norm['scale'])}")


def _check_attrs(where: str, op: dict) -> None:
    """Every attribute an executor reads, typed and in range (JSON gives any type anywhere)."""
    kind = op["op"]
    pairs = {"kernel": 1, "stride": 1, "padding": 0, "scale": 1}
    for key, lo in pairs.items():
        if key in op and op[key] is not None and not _ints(op[key], 2, lo):
            raise FormatError(f"{where}: field {key!r}: expected two integers >= {lo} "
                              f"(at most {I32}), got {_short(op[key])}")
    for key in ("kernel", "scale"):          # may not be null where the kind needs them
        if key in OPS[kind][2] and op[key] is None:
            raise FormatError(f"{where}: field {key!r}: expected two integers, got None")
    if kind in ("conv2d", "qconv2d") and (op["stride"] is None or op["padding"] is None):
        raise FormatError(f"{where}: fields 'stride', 'padding': expected two integers each")
    name = op.get("name")
    if name is not None and not (isinstance(name, str) and name):
        raise FormatError(f"{where}: field 'name': expected a non-empty string, got "
                          f"{_short(name)}")
    if kind == "batchnorm" and not (_num(op["eps"]) and op["eps"] > 0):
        raise FormatError(f"{where}: field 'eps': expected a positive number, "
                          f"got {_short(op['eps'])}")
    if kind == "act_quant" and not _int(op["bits"], 1, 16):
        raise FormatError(f"{where}: field 'bits': expected an integer 1..16, "
                          f"got {_short(op['bits'])}")
    if kind == "hardtanh" and not (_num(op["min"]) and _num(op["max"]) and op["min"] < op["max"]):
        raise FormatError(f"{where}: fields 'min', 'max': expected finite numbers min < max")
    if kind == "avgpool2d":
        (kh, kw), (ph, pw) = op["kernel"], op["padding"] or [0, 0]
        if ph > kh // 2 or pw > kw // 2:
            raise FormatError(f"{where}: field 'padding': {[ph, pw]} is more than half the "
                              f"kernel {[kh, kw]} (torch's rule: a window would see no input)")
        if not isinstance(op.get("count_include_pad", True), bool):
            raise FormatError(f"{where}: field 'count_include_pad': expected true or false")
    if kind in ("qconv2d", "qdense"):
        _check_qlayer(where, op)


def _check_qlayer(where: str, op: dict) -> None:
    if not (isinstance(op["name"], str) and op["name"]):
        raise FormatError(f"{where}: field 'name': a quantized layer needs a non-empty name")
    for key in ("in_channels", "out_channels"):
        if not _int(op[key], 1):
            raise FormatError(f"{where}: field {key!r}: expected a positive integer "
                              f"(at most {I32}), got {_short(op[key])}")
    for key in ("a_bits", "w_bits"):
        if not _int(op[key], 1, 32):
            raise FormatError(f"{where}: field {key!r}: expected an integer 1..32, "
                              f"got {_short(op[key])}")
    for key, known in (("in", IN_MODES), ("w_levels", W_LEVELS)):
        if not isinstance(op[key], str) or op[key] not in known:
            raise FormatError(f"{where}: field {key!r}: expected one of {', '.join(known)}, "
                              f"got {_short(op[key])}")
    if op["out"] not in ("float", "bits"):
        raise FormatError(f"{where}: field 'out': expected 'float' or 'bits', "
                          f"got {_short(op['out'])}")
    if not isinstance(op["integer_acc"], bool):
        raise FormatError(f"{where}: field 'integer_acc': expected true or false, "
                          f"got {_short(op['integer_acc'])}")
    if not (_num(op["pad_value"]) and op["pad_value"] in (-1, 0, 1)):
        raise FormatError(f"{where}: field 'pad_value': expected -1, 0 or 1, "
                          f"got {_short(op['pad_value'])}")
    if op.get("sx") is not None and not _num(op["sx"]):
        raise FormatError(f"{where}: field 'sx': expected a finite number or null, "
                          f"got {_short(op['sx'])}")
    if op["in"] == "uint8":
        u8 = op.get("u8")
        if op["a_bits"] != 8 or not (isinstance(u8, dict) and _num(u8.get("mean"))
                                     and _num(u8.get("std"))):
            raise FormatError(f"{where}: input 'uint8' needs a_bits 8 and field 'u8' "
                              f"{{'mean': number, 'std': number}}, got a_bits "
                              f"{_short(op['a_bits'])}, u8 {_short(u8)}")
    spatial = op.get("spatial")
    if spatial is not None and not isinstance(spatial, bool):
        raise FormatError(f"{where}: field 'spatial': expected true, false or null")
    if op["op"] == "qconv2d" and spatial:
        raise FormatError(f"{where}: field 'spatial': only a qdense layer reads a spatial input")
    if op["op"] == "qdense" and (op["stride"] != [1, 1] or op["padding"] != [0, 0]
                                 or (not spatial and op["kernel"] != [1, 1])):
        raise FormatError(f"{where}: a qdense layer has kernel [1, 1] (or, spatial, the input's "
                          f"[H, W]), stride [1, 1] and padding [0, 0]; got kernel "
                          f"{op['kernel']}, stride {op['stride']}, padding {op['padding']}")
    if op["out"] == "bits":
        if op.get("threshold") is None or op.get("flip") is None:
            raise FormatError(f"{where}: out 'bits' needs fields 'threshold' and 'flip'")
        if bitwise_kind(op) == "float":
            raise FormatError(f"{where}: out 'bits' (a folded threshold stage) needs a layer "
                              f"on the bitwise kernels; input {op['in']!r} ({op['a_bits']} "
                              f"bits) with {op['w_levels']!r} weights ({op['w_bits']} bits) "
                              f"runs in float")
    pool = op.get("pool")
    if pool is not None:
        if op["op"] != "qconv2d" or op["out"] != "bits":
            raise FormatError(f"{where}: field 'pool': only a qconv2d layer with out 'bits' "
                              f"pools its bits")
        if not (isinstance(pool, dict) and _ints(pool.get("kernel"), 2, 1)
                and (pool.get("stride") is None or _ints(pool["stride"], 2, 1))):
            raise FormatError(f"{where}: field 'pool': expected {{'kernel': [kh, kw], "
                              f"'stride': [sh, sw]}}, got {_short(pool)}")


def _check_tensors(where: str, op: dict, entries: Mapping[str, Any]) -> None:
    """The encodings of the tensors an op reads: a quantized layer's weight levels are stored
    ``packed`` with the op's levels (and bits) unless they are float; everything else is a
    float tensor (``raw`` / ``dc``)."""
    kind = op["op"]
    for k in OPS[kind][3]:
        name = op.get(k)
        if name is None:
            continue
        e = getattr(entries[name], "entry", entries[name])    # an entry, or a model.Tensor
        e = e if isinstance(e, dict) else {}
        enc = e.get("enc")
        if kind in ("qconv2d", "qdense") and k == "weight" and op["w_levels"] != "float":
            if enc != "packed" or e.get("levels") != op["w_levels"]:
                raise FormatError(f"{where}: field 'weight': w_levels {op['w_levels']!r} needs "
                                  f"a packed tensor of those levels, {name!r} is "
                                  f"{_short(enc)} {_short(e.get('levels'))}")
            if op["w_levels"] == "planes" and e.get("bits") != op["w_bits"]:
                raise FormatError(f"{where}: field 'w_bits': {op['w_bits']}, the packed weight "
                                  f"{name!r} has {_short(e.get('bits'))} bit planes")
        elif enc == "packed":
            raise FormatError(f"{where}: field {k!r}: {name!r} is a packed tensor of weight "
                              f"levels; this field takes a float tensor")


def _check_op(where: str, op: Any, defined: set, tensors: Iterable[str] | None) -> None:
    if not isinstance(op, dict):
        raise FormatError(f"{where}: expected an object, got {type(op).__name__}")
    kind = op.get("op")
    if not isinstance(kind, str) or kind not in OPS:
        raise FormatError(f"{where}: field 'op': unknown op {_short(kind)} (this lowbit knows: "
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
    for k in tensor_attrs:
        if (k in required or op.get(k) is not None) and not (isinstance(op.get(k), str)
                                                             and op[k]):
            raise FormatError(f"{where} ({kind}): field {k!r}: expected a tensor name, got "
                              f"{_short(op.get(k))}")
    if tensors is not None:
        for k in tensor_attrs:
            name = op.get(k)
            if name is not None and (not isinstance(name, str) or name not in tensors):
                raise FormatError(f"{where} ({kind}): field {k!r}: no tensor {_short(name)} in "
                                  f"the file")
    _check_attrs(f"{where} ({kind})", op)
    if isinstance(tensors, Mapping):
        _check_tensors(f"{where} ({kind})", op, tensors)


def parse(graph: Any, where: str = "graph", tensors: Iterable[str] | None = None) -> dict:
    """Check ``graph`` (any supported version) and return it as a version-2 graph.

    ``tensors``: the names of the file's tensors, to check every reference, or their header
    entries (``{name: entry}`` or ``{name: lowbit.codec.model.Tensor}``), to check the
    encodings too (a quantized layer's levels are
    packed, float fields are not).  Raises
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
    if tensors is not None and not isinstance(tensors, Mapping):
        tensors = set(tensors)
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
