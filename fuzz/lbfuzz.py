"""The model-loader fuzz target and its structure-aware mutator (no atheris needed here).

``fuzz/fuzz_model.py`` drives this with atheris (coverage-guided, libFuzzer); the pytest
``tests/codec/test_fuzz.py`` replays the seed corpus and a fixed set of deterministic
mutations through the same :meth:`Target.check`, so the oracle runs where atheris is missing.

The target (:meth:`Target.check`) takes bytes, writes them to a file and loads it the way a
user does: ``Runtime(path)`` (container + model header + graph parse + shape inference + plan,
native executor) and ``Runtime(path, executor="python")``; when a file loads, one ``run`` on a
fixed tiny uint8 batch (2 images of the graph input's shape) through both.  Outcomes:

- **clean refusal**: a ``ValueError`` whose message names the file (``lowbit.codec.FormatError``
  is one; so are the runtime's ``ValueError`` / ``lowbit.runtime.inputs.InputError`` refusals,
  which all start with the path).  A ``ValueError`` that does not name the file (numpy's
  "cannot reshape array ...", a broadcast error) is a finding: it came from an unchecked field;
- **a run**: the outputs are float arrays of the declared batch; when the mutated file means
  the same model as a seed (same parsed graph and the same decoded tensors: a re-encoded
  Deep-Compression tensor, reordered sections, another header layout, changed free-form meta,
  packed pad bits), every output must equal, bit for bit, that seed's outputs on the same
  executor;
- anything else is a **finding** (:class:`Finding`, or the exception itself: IndexError,
  KeyError, TypeError, ZeroDivisionError, MemoryError, OverflowError, ...), and so is a crash
  of the process or a case that runs longer than 1 s (libFuzzer's ``-timeout=1``; the pytest
  checks CPU seconds per case).

A file whose graph is valid but large (more than ``RUN_BUDGET`` float values per image over all
its values) is loaded but not run: a valid file may describe a big network, and running one is
not a loader question.  Such cases are counted (``stats["not-run-large"]``).

Mutations (:func:`mutate`) work on two levels: raw bytes (libFuzzer's mutator in atheris; a
simple byte mutator here), which the checksums mostly refuse, and **structure-aware** ones that
decode the container, change the model header (graph ops and their fields, tensor entries,
the graph's inputs / outputs), section bytes (incl. the codebook / Huffman tables / index and
value streams of "dc" tensors and the words and pad bits of packed weights), dtypes and
shapes, or re-encode tensors without changing their values, and then re-sign the file (valid
CRCs, :func:`sign`, byte-identical to ``lowbit.codec.container.encode``) so that the mutation
reaches the parsers behind the checksums.
"""
from __future__ import annotations

import copy
import hashlib
import re
import json
import math
import os
import random
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lowbit import codec
from lowbit.codec import container
from lowbit.codec.graph import OPS, IN_MODES, W_LEVELS

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
RUN_BUDGET = 1 << 22            # float values per image over all values of a graph
TIME_LIMIT = 1.0                # seconds of CPU per case (pytest); libFuzzer: -timeout=1
EXECUTORS = ("native", "python")     # "native": the default choice (native, else fallback)


class Finding(AssertionError):
    """The oracle failed on an input (not a clean refusal, not a faithful run)."""


# Findings in lowbit.runtime (not the loader) reported to its owner and not yet fixed there:
# key -> ([(where, pattern), ...], what); a "run" pattern is searched in "FRAME: MESSAGE", FRAME
# the innermost lowbit function the exception came from ("float_ops.concat").  A case that
# ends in one of them is counted
# as "known:<key>" instead of failing, so that fuzzing goes on past them; docs/robustness.md
# lists them.  Remove an entry once fixed: the pytest replays a reproducer for each.
KNOWN: dict[str, tuple[list[tuple[str, str]], str]] = {
    # key: ([(where, message regex)], explanation) -- runtime findings reported and not yet
    # fixed, so that fuzzing goes on past them.  Empty: the three found so far
    # (spatial-dense-float-input, flat-bits-layout, nan-sign) are fixed in the runtime and
    # replayed by tests/codec/test_fuzz.py.
}


# --------------------------------------------------------------------------------------------
# signing: container bytes from (model header, sections)

def sign(meta: Any, sections: list[tuple[str, Any]] | dict, deflate: bool | None = None,
         entry_hook: Callable[[list], None] | None = None) -> bytes:
    """Container bytes with valid CRCs, as ``lowbit.codec.container.encode`` writes them
    (identical bytes for ``deflate=None`` and a JSON-able header), but also for headers that
    encode refuses (NaN / inf numbers, a non-dict meta), a forced deflate flag, and section
    entries edited by ``entry_hook(entries)`` after the CRCs are computed."""
    items = list(sections.items()) if isinstance(sections, dict) else list(sections)
    entries, datas = [], []
    for name, value in items:
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            entry = {"name": name, "kind": "bytes"}
        else:
            arr = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
            entry = {"name": name, "kind": "array", "dtype": arr.dtype.str,
                     "shape": [int(s) for s in arr.shape]}
            data = arr.reshape(-1).view(np.uint8).tobytes() if arr.size else b""
        entry["nbytes"] = len(data)
        entry["crc32"] = zlib.crc32(data) & 0xFFFFFFFF
        entries.append(entry)
        datas.append(data)
    off = 0
    for entry in entries:
        entry["offset"] = off
        off += entry["nbytes"] + (-entry["nbytes"]) % 64
    offsets = [entry["offset"] for entry in entries]     # where the bytes go, whatever
    if entry_hook is not None:                          # the hook writes in the table
        entry_hook(entries)
    doc = {"meta": meta, "sections": entries}
    text = json.dumps(doc, separators=(",", ":"), allow_nan=True, default=_json_default,
                      ensure_ascii=False).encode("utf-8", "surrogatepass")
    flags = 0
    packed = zlib.compress(text, 9)
    if deflate is None:
        deflate = len(packed) + (-len(packed)) % 64 < len(text) + (-len(text)) % 64
    if deflate:
        text, flags = packed, 1
    base = 64 + len(text) + (-len(text)) % 64
    total = base + off
    pre = struct.pack("<8sIIQQI24s", b"LOWBITMF", 1, flags, total, len(text),
                      zlib.crc32(text) & 0xFFFFFFFF, b"\0" * 24)
    pre += struct.pack("<I", zlib.crc32(pre) & 0xFFFFFFFF)
    out = bytearray(total)
    out[:64] = pre
    out[64:64 + len(text)] = text
    for o, data in zip(offsets, datas):
        out[base + o:base + o + len(data)] = data
    return bytes(out)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def unsign(data: bytes) -> tuple[dict, list[tuple[str, Any]]] | None:
    """(model header, [(name, section)]) of valid container bytes (copies), or None."""
    try:
        meta, sections = container.decode(data)
    except Exception:           # refusals; a decoder crash is for the target to report
        return None
    return copy.deepcopy(meta), [(k, v.copy() if isinstance(v, np.ndarray) else v)
                                 for k, v in sections.items()]


# --------------------------------------------------------------------------------------------
# the target

def _known(where: str, message: str) -> str | None:
    for key, (patterns, _) in KNOWN.items():
        if any(w == where and re.search(p, message) for w, p in patterns):
            return f"known:{key}"
    return None


def _frame(e: BaseException) -> str:
    """``module.function`` of the innermost traceback frame inside the lowbit package."""
    import traceback
    root = os.path.dirname(os.path.abspath(codec.__file__ + "/.."))
    last = ""
    for fs in traceback.extract_tb(e.__traceback__):
        if fs.filename.startswith(root):
            last = f"{Path(fs.filename).stem}.{fs.name}"
    return last


def _default_input(shape) -> np.ndarray | None:
    """2 images of the graph input's shape, the same pixels for every file with that shape."""
    shape = tuple(int(v) for v in (shape or [1]))
    n = math.prod(shape)
    if n > RUN_BUDGET:
        return None
    rng = np.random.default_rng(1234 + n)
    return rng.integers(0, 256, (2,) + shape, dtype=np.uint8)


def fingerprint(data: bytes) -> str | None:
    """A digest of what a file means (parsed graph + decoded tensors, and the packed sections'
    shapes): equal digests = the same model, whatever the bytes.  None when some tensor does
    not decode (FormatError) -- other exceptions propagate (a decoder crash is a finding)."""
    meta, sections = container.decode(data)
    mf = codec.model.from_container("fp", meta, sections)
    graph = codec.graph.parse(mf.graph, "fp", mf.entries)
    h = hashlib.sha256(json.dumps(graph, sort_keys=True, default=str).encode())
    for name in sorted(mf.entries):
        try:
            v = np.asarray(mf.tensor(name))
        except codec.FormatError:
            return None
        e = mf.entries[name]
        h.update(name.encode() + b"\0" + v.dtype.str.encode() + str(v.shape).encode())
        h.update(np.ascontiguousarray(v).tobytes())
        if e.get("enc") == "packed":
            s = sections[name]
            h.update(str(getattr(s, "shape", None)).encode())
            h.update(json.dumps({k: e.get(k) for k in ("levels", "bits", "step", "offset")},
                                sort_keys=True, default=str).encode())
    return h.hexdigest()


class Target:
    """The fuzz target.  ``seeds``: the corpus files whose outputs are the reference for
    semantically unchanged mutations."""

    def __init__(self, seeds: list[Path] | None = None, workdir: str | None = None,
                 threads: int = 1):
        base = workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.dir = tempfile.mkdtemp(prefix="lbfuzz-", dir=base)
        self.path = os.path.join(self.dir, "case.lbm")
        self.threads = threads
        # the format's size limit, lowered: a few bytes of a sparse "dc" tensor can declare
        # 2^28 values (1 GiB decoded); a fuzz case should take milliseconds (restored by close)
        self._limit = codec.shapes.MAX_ELEMENTS
        codec.shapes.MAX_ELEMENTS = RUN_BUDGET
        self.stats: dict[str, int] = {}
        self.exec_diffs: list[bytes] = []
        self.native_only: list[str] = []
        self.reference: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for p in seeds if seeds is not None else sorted(CORPUS.glob("*.lbm")):
            data = Path(p).read_bytes()
            outs = self._run_all(data)
            if outs is None or isinstance(outs, str):
                raise RuntimeError(f"seed {p} does not run: {outs}")
            self.reference[fingerprint(data)] = outs

    def close(self) -> None:
        codec.shapes.MAX_ELEMENTS = self._limit
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        os.rmdir(self.dir)

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _clean(self, e: BaseException) -> bool:
        return isinstance(e, ValueError) and self.path in str(e)

    def _run_all(self, data: bytes):
        """{executor: outputs}, or a string saying where a clean refusal happened."""
        from lowbit.runtime import Runtime
        with open(self.path, "wb") as f:
            f.write(data)
        rts = {}
        refused = {}
        for ex in EXECUTORS:
            try:
                rts[ex] = Runtime(self.path, threads=self.threads,
                                  executor=None if ex == "native" else ex)
            except ValueError as e:
                if not self._clean(e):
                    raise Finding(f"load ({ex} executor): ValueError that does not name the "
                                  f"file: {e}") from e
                refused[ex] = str(e)
        if len(refused) == len(EXECUTORS):
            if refused["native"] != refused["python"]:
                raise Finding(f"the executors refuse differently:\n  {refused}")
            return "refused-load"
        if refused:
            if "python" in refused:
                raise Finding(f"the python executor refuses a file the native one loads: "
                              f"{refused}")
            self._count("refused-load-native-only")
            self.native_only.append(refused["native"])
            return "refused-load-native-only"
        rt = rts["python"]
        total = sum(math.prod(s) for s in rt.shapes.values())
        x = _default_input(rt.inputs[0].get("shape"))
        if x is None or total > RUN_BUDGET:
            return "not-run-large"
        outs: dict[str, dict[str, np.ndarray]] = {}
        for ex, r in rts.items():
            try:
                got = r.run(x)
            except ValueError as e:
                if self._clean(e):
                    return "refused-run"
                known = _known("run", f"{_frame(e)}: {e}")
                if known:
                    return known
                raise Finding(f"run ({r.executor} executor): ValueError that does not name "
                              f"the file: {e}") from e
            for v, a in got.items():
                want = (2,) + tuple(rt.shapes[v])
                if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != want:
                    msg = (f"output {v!r} is {type(a).__name__} {getattr(a, 'dtype', '')} "
                           f"{getattr(a, 'shape', '')}, the graph says float32 {want}")
                    known = _known("shape", msg)
                    if known:
                        return known
                    raise Finding(f"run ({r.executor} executor): {msg}")
            outs[ex] = got
        return outs

    def check(self, data: bytes) -> str:
        """Run one input through the oracle; returns the outcome, raises on a finding."""
        t0 = time.process_time()
        try:
            outs = self._run_all(data)
        finally:            # under atheris the process ends without close(): leave no file
            if os.path.exists(self.path):
                os.unlink(self.path)
        if isinstance(outs, str):
            outcome = outs
        else:
            fp = fingerprint(data)
            ref = self.reference.get(fp) if fp is not None else None
            if ref is not None:
                for ex, got in outs.items():
                    for v, a in ref[ex].items():
                        b = got.get(v)
                        if b is None or a.shape != b.shape or not np.array_equal(a, b,
                                                                                  equal_nan=True):
                            raise Finding(f"a file that means the same model as a seed gives "
                                          f"other outputs ({ex} executor, value {v!r})")
                outcome = "ran-same-model"
            else:
                outcome = "ran"
            a, b = outs["native"], outs["python"]
            for v in a:
                x, y = a[v], b[v]
                fin = np.isfinite(x) & np.isfinite(y)
                scale = float(np.abs(y[fin]).max(initial=0.0))
                if not (np.array_equal(np.isfinite(x), np.isfinite(y))
                        and np.allclose(x[fin], y[fin], rtol=0, atol=1e-4 * (1 + scale))):
                    self._count("executors-differ")
                    if len(self.exec_diffs) < 20:
                        self.exec_diffs.append(data)
                    break
        dt = time.process_time() - t0
        if dt > TIME_LIMIT:
            raise Finding(f"took {dt:.2f} s of CPU (limit {TIME_LIMIT} s)")
        self._count(outcome)
        return outcome


# --------------------------------------------------------------------------------------------
# raw byte mutations (the fallback of libFuzzer's mutator)

_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF]


def mutate_bytes(data: bytes, rng: random.Random, max_size: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 4, 8))):
        op = rng.randrange(7)
        if not b:
            b = bytearray(rng.randbytes(rng.randrange(1, 64)))
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice(_INTERESTING) if rng.random() < .5 else rng.randrange(256)
        elif op == 2:
            del b[i:i + rng.randrange(1, 16)]
        elif op == 3:
            b[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif op == 4:
            n = rng.randrange(1, 9)
            b[i:i + n] = rng.choice([b"\0", b"\xff"]) * n
        elif op == 5:
            del b[rng.randrange(len(b)):]
        else:
            j = rng.randrange(len(b))
            n = rng.randrange(1, 32)
            b[i:i + n] = b[j:j + n]
    return bytes(b[:max_size])


# --------------------------------------------------------------------------------------------
# structure-aware mutations

_INTS = [0, 1, -1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 127, 128, 255, 256, 1023, 4096,
         65535, 65536, 2**31 - 1, 2**31, 2**32, 2**32 + 1, 2**53, 2**63 - 1, 2**63, 2**64,
         -2**31, -2**63, 10**30]
_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 1e-300, 3.4e38, 1e39, 1e308, -1e308,
           float("nan"), float("inf"), float("-inf"), 255.0, 1e-7]
_STRINGS = (list(OPS) + list(IN_MODES) + list(W_LEVELS) +
            ["raw", "dc", "packed", "float", "bits", "uint8", "float32", "sparse", "dense",
             "f4", "f2", "f8", "<f4", "lowbit.model", "input", "", "x", "\u00e9", "\ud800",
             "nan", "1", "bogus"])
_KEYS = sorted({k for _, _, req, t in OPS.values() for k in req + t} |
               {"op", "inputs", "outputs", "name", "pool", "sx", "u8", "spatial", "bias",
                "enc", "shape", "store", "n", "ib", "ih", "il", "k", "cb", "vb", "vh",
                "levels", "bits", "step", "offset", "count_include_pad", "version",
                "normalization", "dtype", "mean", "std", "scale", "min", "max"})


def _rand_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.3:
        return rng.choice(_INTS)
    if r < 0.45:
        return rng.choice(_FLOATS)
    if r < 0.65:
        return rng.choice(_STRINGS)
    if r < 0.72:
        return rng.choice([None, True, False])
    if r < 0.9 or depth > 1:
        return [rng.choice(_INTS[:12]) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(_KEYS): _rand_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}


def _mutate_scalar(v: Any, rng: random.Random, names: list[str]) -> Any:
    r = rng.random()
    if r < 0.1:
        return _rand_value(rng)
    if isinstance(v, bool):
        return (not v) if rng.random() < .7 else rng.choice([0, 1, None, "true"])
    if isinstance(v, int):
        return rng.choice([v + 1, v - 1, v * 2, v // 2, -v, v + rng.randint(-70, 70),
                           rng.choice(_INTS), float(v), str(v)])
    if isinstance(v, float):
        return rng.choice([v * 2, -v, v / 2, v + 1e-3, rng.choice(_FLOATS), int(v)
                           if math.isfinite(v) else 0, math.nextafter(v, math.inf)])
    if isinstance(v, str):
        if names and rng.random() < 0.5:
            return rng.choice(names)
        return rng.choice(_STRINGS + [v + "x", v[:-1], v.upper()])
    return _rand_value(rng)


def _mutate_container_obj(v: Any, rng: random.Random, names: list[str]) -> Any:
    """Mutate a list or dict in place (or return a replacement)."""
    if isinstance(v, list):
        r = rng.random()
        if v and r < 0.25:
            del v[rng.randrange(len(v))]
        elif v and r < 0.45:
            v.insert(rng.randrange(len(v) + 1), copy.deepcopy(rng.choice(v)))
        elif r < 0.6:
            v.insert(rng.randrange(len(v) + 1), rng.choice(names) if names and rng.random() < .5
                     else _rand_value(rng))
        elif v and r < 0.7:
            v.reverse()
        elif r < 0.8:
            return rng.choice([[], None, 0, "x", {}, v[:1]])
        elif v:
            i = rng.randrange(len(v))
            v[i] = _mutate_any(v[i], rng, names)
        return v
    if isinstance(v, dict):
        r = rng.random()
        if v and r < 0.35:
            del v[rng.choice(list(v))]
        elif r < 0.65:
            v[rng.choice(_KEYS)] = _rand_value(rng)
        elif r < 0.75:
            return rng.choice([[], None, 0, "x", {}])
        elif v:
            k = rng.choice(list(v))
            v[k] = _mutate_any(v[k], rng, names)
        return v
    return _mutate_scalar(v, rng, names)


def _mutate_any(v: Any, rng: random.Random, names: list[str]) -> Any:
    return _mutate_container_obj(v, rng, names) if isinstance(v, (list, dict)) \
        else _mutate_scalar(v, rng, names)


def _nodes(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every (path, value) under obj."""
    out = [(path, obj)]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _nodes(v, path + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def _value_names(meta: dict) -> list[str]:
    g = meta.get("graph") if isinstance(meta, dict) else None
    names = ["input"]
    if isinstance(g, dict):
        for op in g.get("ops") or []:
            if isinstance(op, dict):
                for v in (op.get("outputs") or []) if isinstance(op.get("outputs"), list) else []:
                    if isinstance(v, str):
                        names.append(v)
    if isinstance(meta, dict) and isinstance(meta.get("tensors"), dict):
        names += list(meta["tensors"])
    return names


_TEMPLATES: dict[str, dict] = {
    "relu": {}, "sign": {}, "flatten": {}, "global_avgpool": {},
    "hardtanh": {"min": -1.0, "max": 1.0}, "act_quant": {"bits": 2},
    "maxpool2d": {"kernel": [2, 2], "stride": [2, 2]},
    "avgpool2d": {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
                  "count_include_pad": False},
    "upsample": {"scale": [2, 2]},
}


def _mutate_graph(meta: dict, rng: random.Random) -> None:
    g = meta.get("graph")
    if not isinstance(g, dict) or not isinstance(g.get("ops"), list):
        return
    ops, names = g["ops"], _value_names(meta)
    r = rng.random()
    if ops and r < 0.15:                                   # delete an op
        del ops[rng.randrange(len(ops))]
    elif ops and r < 0.3:                                  # swap two ops
        i, j = rng.randrange(len(ops)), rng.randrange(len(ops))
        ops[i], ops[j] = ops[j], ops[i]
    elif ops and r < 0.45:                                 # duplicate an op (fresh output)
        i = rng.randrange(len(ops))
        op = copy.deepcopy(ops[i])
        if isinstance(op, dict):
            op["outputs"] = [f"dup{rng.randrange(1000)}"]
            op.pop("name", None) if rng.random() < .5 else op.update(name=f"d{rng.randrange(99)}")
        ops.insert(rng.randrange(i, len(ops)) + 1, op)
    elif r < 0.65:                                         # insert a parameterless / simple op
        kind = rng.choice(list(_TEMPLATES) + ["add", "concat"])
        pos = rng.randrange(len(ops) + 1)
        avail = ["input"] + [o["outputs"][0] for o in ops[:pos]
                             if isinstance(o, dict) and isinstance(o.get("outputs"), list)
                             and o["outputs"] and isinstance(o["outputs"][0], str)]
        n_in = 2 if kind in ("add", "concat") else 1
        new = dict(op=kind, inputs=[rng.choice(avail) for _ in range(n_in)],
                   outputs=[f"new{rng.randrange(1000)}"], **copy.deepcopy(_TEMPLATES.get(kind, {})))
        ops.insert(pos, new)
        if pos < len(ops) - 1 and rng.random() < 0.7:      # splice it in: the next op reads it
            nxt = ops[pos + 1]
            if isinstance(nxt, dict) and isinstance(nxt.get("inputs"), list) and nxt["inputs"]:
                nxt["inputs"][0] = new["outputs"][0]
        elif isinstance(g.get("outputs"), list) and g["outputs"]:
            g["outputs"][-1] = new["outputs"][0]
    elif ops and r < 0.8:                                  # rewire an input
        op = rng.choice(ops)
        if isinstance(op, dict) and isinstance(op.get("inputs"), list) and op["inputs"]:
            op["inputs"][rng.randrange(len(op["inputs"]))] = rng.choice(names)
    elif ops and r < 0.9:                                  # change an op's kind
        op = rng.choice(ops)
        if isinstance(op, dict):
            op["op"] = rng.choice(list(OPS))
    else:                                                  # graph outputs / version / inputs
        key = rng.choice(["outputs", "version", "inputs"])
        g[key] = _mutate_any(g.get(key), rng, names)


def _mutate_header(meta: Any, rng: random.Random) -> Any:
    """One mutation somewhere in the model header, weighted toward ops and tensor entries."""
    names = _value_names(meta) if isinstance(meta, dict) else []
    if isinstance(meta, dict) and rng.random() < 0.3:
        _mutate_graph(meta, rng)
        return meta
    nodes = _nodes(meta)
    weights = [4.0 if len(p) >= 3 and p[0] in ("graph", "tensors") else
               1.0 if p else 0.05 for p, _ in nodes]
    path, value = rng.choices(nodes, weights)[0]
    return _set(meta, path, _mutate_any(copy.deepcopy(value), rng, names))


def _float_specials(a: np.ndarray, rng: random.Random) -> np.ndarray:
    a = a.copy()
    flat = a.reshape(-1)
    if flat.size == 0:
        return a
    idx = rng.randrange(flat.size)
    if a.dtype.kind == "f":
        flat[idx] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 3e38, -3e38,
                                float(np.finfo(a.dtype).max), float(np.finfo(a.dtype).tiny)])
        if rng.random() < 0.2:
            flat[:] = rng.choice([0.0, 1.0, -1.0, 1e-30])
    elif a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        flat[idx] = rng.choice([info.min, info.max, 0, 1, 2, info.max // 2])
        if rng.random() < 0.2:
            flat[:] = rng.choice([info.min, info.max, 0, 1])
    elif a.dtype.kind == "b":
        flat[idx] = not flat[idx]
    return a


def _reinterpret(a: np.ndarray, rng: random.Random) -> np.ndarray:
    """Other dtype / shape for the same (or nearly the same) bytes."""
    r = rng.random()
    if r < 0.3 and a.ndim:
        return a.reshape(-1)
    if r < 0.5 and a.ndim >= 2:
        return np.ascontiguousarray(np.swapaxes(a, 0, -1))
    if r < 0.6:
        return a.reshape((1,) + a.shape)
    if r < 0.85:
        dt = np.dtype(rng.choice(["<f4", "<f2", "<f8", "<i4", "<u8", "<u4", "u1", "<i8", "|b1"]))
        raw = a.reshape(-1).view(np.uint8)
        n = raw.size // dt.itemsize
        out = raw[:n * dt.itemsize].view(dt)
        if dt.kind == "b":
            out = (raw[:n] & 1).astype(bool)
        return out.copy()
    if a.size:
        return np.concatenate([a.reshape(-1), a.reshape(-1)[:rng.randrange(1, a.size + 1)]])
    return a


def _set_pad_bits(a: np.ndarray, c: int, rng: random.Random) -> np.ndarray | None:
    """Packed words (last axis) with some of their pad bits set (positions c .. 64*W-1)."""
    w = a.shape[-1] if a.ndim else 0
    if a.dtype != np.uint64 or w == 0 or c >= 64 * w or c <= 64 * (w - 1) - 64:
        return None
    a = a.copy()
    used = c - 64 * (w - 1)
    mask = np.uint64(((1 << 64) - 1) ^ ((1 << used) - 1)) if used < 64 else np.uint64(0)
    if not mask:
        return None
    flat = a.reshape(-1, w)
    rows = rng.sample(range(flat.shape[0]), k=min(flat.shape[0], rng.choice([1, 3, 1000])))
    for row in rows:
        flat[row, -1] |= mask if rng.random() < 0.5 else (mask & np.uint64(1 << (used % 64)))
    return a


def _dc_parts(entry: dict, data: bytes) -> tuple[int, int] | None:
    try:
        k, il = int(entry["k"]), int(entry["il"])
        size = {"f4": 4, "f2": 2}[entry["cb"]]
    except (KeyError, TypeError, ValueError):
        return None
    cb = k * size
    if cb + il > len(data) or k < 0 or il < 0:
        return None
    return cb, cb + il


def _mutate_dc(entry: dict, data: bytes, rng: random.Random, byte_mut) -> tuple[dict, bytes]:
    """A Deep-Compression tensor: mutate its codebook, Huffman length tables, index or value
    stream (keeping the entry's lengths consistent, or not), or its entry fields."""
    parts = _dc_parts(entry, data)
    entry = dict(entry)
    r = rng.random()
    if parts is None or r < 0.2:
        key = rng.choice(["shape", "store", "n", "ib", "ih", "il", "k", "cb", "vb", "vh"])
        entry[key] = _mutate_any(copy.deepcopy(entry.get(key)), rng, [])
        return entry, data
    cb_end, idx_end = parts
    pieces = [data[:cb_end], data[cb_end:idx_end], data[idx_end:]]
    which = rng.choice([0, 1, 1, 2, 2])
    if which == 0 and entry.get("cb") in ("f4", "f2"):
        book = np.frombuffer(pieces[0], dtype="<f4" if entry["cb"] == "f4" else "<f2")
        pieces[0] = _float_specials(book, rng).tobytes() if book.size and rng.random() < .6 \
            else byte_mut(pieces[0])
    else:
        piece = pieces[which]
        huff = (which == 1 and entry.get("ih")) or (which == 2 and entry.get("vh"))
        if huff and rng.random() < 0.5 and piece:
            # rewrite the 5-bit code-length table at the start of the stream
            nsym = (1 << int(entry.get("ib", 1))) if which == 1 else int(entry.get("k", 1))
            t = codec.bitpack.nbytes(nsym, codec.huffman.LENGTH_BITS)
            if 0 < t <= len(piece) and nsym <= 1 << 16:
                lengths = codec.huffman.unpack_lengths(piece[:t], nsym).astype(np.int64)
                i = rng.randrange(nsym)
                lengths[i] = rng.choice([0, 1, 2, 31, lengths[i] + 1, max(0, lengths[i] - 1)])
                if rng.random() < 0.2:
                    lengths[:] = rng.choice([0, 1, 31])
                piece = codec.huffman.pack_lengths(np.clip(lengths, 0, 31)) + piece[t:]
        else:
            piece = byte_mut(piece)
        pieces[which] = piece
    if which == 1 and rng.random() < 0.8:
        entry["il"] = len(pieces[1])                       # keep the layout consistent
    return entry, b"".join(pieces)


def _reencode_dc(entry: dict, value: np.ndarray, rng: random.Random):
    """The same float32 values as another Deep-Compression encoding (or raw)."""
    w = np.asarray(value, np.float32)
    if rng.random() < 0.2:
        return {"enc": "raw"}, np.ascontiguousarray(w)
    vals = np.unique(w[w != 0])
    book = vals if 0 < vals.size <= 64 and rng.random() < 0.7 else None
    try:
        e = codec.compressed.encode(
            w, codebook=book, index_bits=rng.choice([1, 2, 3, 4, 5, 8, 16]),
            huffman_index=rng.random() < .5, huffman_values=rng.random() < .5 and book is not None,
            store=rng.choice(["sparse", "dense", "auto"]))
    except ValueError:
        return None
    return e.entry, e.data


def mutate_structured(data: bytes, rng: random.Random, max_size: int,
                      byte_mut: Callable[[bytes], bytes] | None = None) -> bytes | None:
    """One structure-aware mutation, re-signed; None when ``data`` is not a valid container."""
    doc = unsign(data)
    if doc is None:
        return None
    meta, sections = doc
    byte_mut = byte_mut or (lambda b: mutate_bytes(b, rng, max(len(b) * 2, 16)))
    entries = meta.get("tensors") if isinstance(meta, dict) else None
    entries = entries if isinstance(entries, dict) else {}
    deflate = None
    hook = None
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        r = rng.random()
        names = [n for n, _ in sections]
        if r < 0.35 or not sections:
            meta = _mutate_header(meta, rng)
            entries = meta.get("tensors") if isinstance(meta, dict) and \
                isinstance(meta.get("tensors"), dict) else {}
            continue
        i = rng.randrange(len(sections))
        name, sec = sections[i]
        entry = entries.get(name) if isinstance(entries.get(name), dict) else {}
        enc = entry.get("enc")
        if r < 0.5 and enc == "dc" and isinstance(sec, bytes):
            entry, sec = _mutate_dc(entry, sec, rng, byte_mut)
        elif r < 0.58 and enc == "packed" and isinstance(sec, np.ndarray):
            shape = entry.get("shape")
            c = shape[-1] if isinstance(shape, list) and shape and isinstance(shape[-1], int) else 0
            s = _set_pad_bits(sec, c, rng)
            if s is not None:
                sec = s
            else:
                sec = _float_specials(sec, rng)
        elif r < 0.64 and enc == "packed":
            key = rng.choice(["levels", "shape", "bits", "step", "offset"])
            entry = dict(entry)
            entry[key] = _mutate_any(copy.deepcopy(entry.get(key)), rng, [])
            if key == "levels" and isinstance(sec, np.ndarray) and rng.random() < 0.5:
                sec = np.stack([sec, sec]) if entry[key] == "ternary" else \
                    sec[0] if sec.ndim > 1 else sec
        elif r < 0.7:                                          # semantic-preserving re-encode
            try:
                value = codec.model.ModelFile("m", {}, {name: entry}, {}, {name: sec}).tensor(name)
            except Exception:       # the target decodes it too; a crash is found there
                value = None
            if value is not None and entry.get("enc") in ("raw", "dc") and \
                    np.asarray(value).dtype == np.float32:
                got = _reencode_dc(entry, value, rng)
                if got is not None:
                    entry, sec = got
        elif r < 0.8 and isinstance(sec, np.ndarray):
            sec = _float_specials(sec, rng) if rng.random() < 0.6 else _reinterpret(sec, rng)
        elif r < 0.86:
            if isinstance(sec, np.ndarray):
                raw = byte_mut(sec.reshape(-1).view(np.uint8).tobytes())
                isz = sec.dtype.itemsize
                raw = raw[:len(raw) // isz * isz]
                sec = np.frombuffer(raw, dtype=sec.dtype).copy()
                if rng.random() < 0.5 and sec.size == math.prod(sections[i][1].shape):
                    sec = sec.reshape(sections[i][1].shape)
            else:
                sec = byte_mut(sec)
        elif r < 0.9:                                          # swap / drop / add sections
            j = rng.randrange(len(sections))
            k = rng.random()
            if k < 0.4:
                sections[i], sections[j] = (name, sections[j][1]), (sections[j][0], sec)
                continue
            if k < 0.6:
                del sections[i]
                if rng.random() < 0.5 and isinstance(meta, dict) and \
                        isinstance(meta.get("tensors"), dict):
                    meta["tensors"].pop(name, None)
                continue
            extra = f"extra{rng.randrange(100)}"
            sections.insert(rng.randrange(len(sections) + 1), (extra, np.zeros(3, np.float32)))
            if rng.random() < 0.7 and isinstance(meta, dict) and \
                    isinstance(meta.get("tensors"), dict):
                meta["tensors"][extra] = {"enc": "raw"}
            continue
        elif r < 0.93:                                         # reorder (same model)
            rng.shuffle(sections)
            continue
        elif r < 0.96:                                         # header layout (same model)
            deflate = rng.random() < 0.5
            if isinstance(meta, dict) and rng.random() < 0.5:
                meta = dict(reversed(list(meta.items())))
                m = meta.get("meta")
                if isinstance(m, dict):
                    m[f"note{rng.randrange(9)}"] = rng.choice([1, "x", [1, 2], {"a": None}])
            continue
        else:                                                  # section table edits
            key = rng.choice(["dtype", "shape", "kind", "name", "offset", "nbytes", "crc32"])
            val = _rand_value(rng) if rng.random() < 0.5 else rng.choice(
                ["<f4", "<u8", "|u1", "|b1", "<c8", "<M8", "O", "<U4", "V8", [], [0], [2**62, 2**62]])

            def hook(es, i=i, key=key, val=val):
                if i < len(es):
                    es[i][key] = val
            continue
        sections[i] = (name, sec)
        if isinstance(meta, dict) and isinstance(meta.get("tensors"), dict) and \
                name in meta["tensors"]:
            meta["tensors"][name] = entry
    try:
        out = sign(meta, sections, deflate=deflate, entry_hook=hook)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    return out if len(out) <= max_size else None


def crossover(a: bytes, b: bytes, rng: random.Random, max_size: int) -> bytes:
    """Splice two model files: a tensor of ``b`` (one of the same shape and encoding when
    there is one) in place of one of ``a``'s, or an op of ``b`` spliced into ``a``'s graph
    (reading an earlier value, read by the next op)."""
    da, db = unsign(a), unsign(b)
    if da is None or db is None:
        cut_a, cut_b = rng.randrange(len(a) + 1), rng.randrange(len(b) + 1)
        return (a[:cut_a] + b[cut_b:])[:max_size]
    (ma, sa), (mb, sb) = da, db
    try:
        ta, tb = ma["tensors"], mb["tensors"]
        if rng.random() < 0.6 and sa and sb:
            i = rng.randrange(len(sa))
            na, seca = sa[i]

            def key(name, sec):
                e = (ta if sec is seca else tb).get(name, {})
                return (e.get("enc"), str(e.get("shape") if e.get("enc") != "raw"
                                          else getattr(sec, "shape", None)))
            same = [(n, s) for n, s in sb if key(n, s) == key(na, seca)]
            nb, secb = rng.choice(same if same and rng.random() < 0.8 else sb)
            sa[i] = (na, secb)
            ta[na] = copy.deepcopy(tb[nb])
        else:
            opb = copy.deepcopy(rng.choice(mb["graph"]["ops"]))
            ops = ma["graph"]["ops"]
            pos = rng.randrange(len(ops) + 1)
            avail = ["input"] + [o["outputs"][0] for o in ops[:pos]]
            opb["inputs"] = [rng.choice(avail) for _ in opb.get("inputs") or [0]]
            opb["outputs"] = [f"x{rng.randrange(1000)}"]
            if isinstance(opb.get("name"), str):
                opb["name"] += "_x"
            ops.insert(pos, opb)
            if pos + 1 < len(ops) and ops[pos + 1]["inputs"]:
                ops[pos + 1]["inputs"][0] = opb["outputs"][0]
            for k in OPS.get(opb.get("op"), (0, 0, (), ()))[3]:
                t = opb.get(k)
                if isinstance(t, str) and t in tb and t not in ta:
                    ta[t] = tb[t]
                    sa.append((t, dict(sb)[t]))
        out = sign(ma, sa)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError):
        return a
    return out if len(out) <= max_size else a


def mutate(data: bytes, rng: random.Random, max_size: int,
           raw_mut: Callable[[bytes, int], bytes] | None = None) -> tuple[str, bytes]:
    """One mutation: ``("raw", bytes)`` (not re-signed) or ``("signed", bytes)``.
    ``raw_mut(data, max_size)``: libFuzzer's mutator under atheris, else :func:`mutate_bytes`."""
    raw = raw_mut or (lambda d, m: mutate_bytes(d, rng, m))
    if rng.random() < 0.25:
        return "raw", raw(data, max_size)
    byte_mut = (lambda b: raw(b, max(2 * len(b), 16))) if raw_mut and rng.random() < .5 else None
    try:
        out = mutate_structured(data, rng, max_size, byte_mut)
    except Exception:       # a mutator stumbling on odd input; the target sees it anyway
        out = None
    if out is None:
        return "raw", raw(data, max_size)
    return "signed", out


def family(data: bytes) -> str:
    """What a (mutated) file is, for counting: "dc" (a Deep-Compression tensor), "binary"
    (packed weight levels), "float" (raw tensors only), or "unreadable" (no valid container
    or model header: the checksums' and parsers' side)."""
    try:
        meta, _ = container.decode(data)
        encs = {e.get("enc") for e in meta["tensors"].values()}
    except Exception:
        return "unreadable"
    return "dc" if "dc" in encs else "binary" if "packed" in encs else "float"


def seeds() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(CORPUS.glob("*.lbm"))]


def cases(n: int, seed: int = 0, max_size: int = 1 << 16):
    """``n`` deterministic mutated inputs per corpus seed: ``(label, kind, bytes)``; every
    third one mutates the previous mutant again (stacked mutations)."""
    for name, data in seeds():
        rng = random.Random(f"{seed}:{name}")
        prev = data
        for i in range(n):
            base = prev if i % 3 == 2 else data
            kind, out = mutate(base, rng, max_size)
            prev = out if kind == "signed" else data
            yield f"{name}#{i}", kind, out
