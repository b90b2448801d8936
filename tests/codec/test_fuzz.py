"""The fuzz target's oracle without atheris: the seed corpus, a fixed set of deterministic raw
and structure-aware (re-signed) mutations, and one reproducer per loader bug fuzzing found.

fuzz/lbfuzz.py is the target (``Target.check``: a clean ValueError naming the file, or a run
with the graph's output shapes that equals the seed's outputs whenever the file still means
the same model); fuzz/fuzz_model.py runs it coverage-guided under atheris (.ci/run).
"""
from __future__ import annotations

import collections
import copy
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from lowbit import codec
from lowbit.codec import FormatError, container

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "fuzz"))
import lbfuzz  # noqa: E402

MUTATIONS_PER_SEED = 120


@pytest.fixture(scope="module")
def target():
    t = lbfuzz.Target()
    yield t
    t.close()


def _seed(name: str) -> bytes:
    return (lbfuzz.CORPUS / name).read_bytes()


def _edit(name: str, fn) -> bytes:
    """The seed with its (model header, sections) edited by ``fn`` and re-signed."""
    meta, sections = lbfuzz.unsign(_seed(name))
    sections = dict(sections)
    fn(meta, sections)
    return lbfuzz.sign(meta, sections)


def _op(meta: dict, name: str) -> dict:
    return next(op for op in meta["graph"]["ops"] if op.get("name") == name)


def test_corpus_is_small_and_covers_the_encodings():
    seeds = lbfuzz.seeds()
    assert len(seeds) >= 5 and sum(len(d) for _, d in seeds) < 1 << 20
    encs = collections.Counter()
    for _, data in seeds:
        meta, _ = container.decode(data)
        encs.update(e["enc"] for e in meta["tensors"].values())
        encs.update(e.get("levels") for e in meta["tensors"].values() if e["enc"] == "packed")
    for kind in ("raw", "dc", "packed", "binary", "ternary", "planes"):
        assert encs[kind], kind


def test_sign_writes_what_container_encode_writes():
    for _, data in lbfuzz.seeds():
        meta, sections = lbfuzz.unsign(data)
        assert lbfuzz.sign(meta, sections) == data == container.encode(meta, dict(sections))


def test_every_seed_runs_as_itself(target):
    for name, data in lbfuzz.seeds():
        assert target.check(data) == "ran-same-model", name


def test_deterministic_mutations_find_nothing(target):
    """MUTATIONS_PER_SEED raw and re-signed mutations of every seed: each one is refused
    cleanly or runs faithfully.  The counts make sure the mutations reach past the checksums
    and the parsers (some load and run, some still mean their seed's model)."""
    kinds, outcomes = collections.Counter(), collections.Counter()
    for label, kind, data in lbfuzz.cases(MUTATIONS_PER_SEED, seed=2024):
        kinds[kind] += 1
        try:
            outcomes[target.check(data)] += 1
        except Exception as e:   # the message says which case: rerun it with lbfuzz.cases
            raise AssertionError(f"{label} ({kind} mutation): {type(e).__name__}: {e}") from e
    total = MUTATIONS_PER_SEED * len(lbfuzz.seeds())
    assert sum(kinds.values()) == total
    assert kinds["signed"] > total // 2 and kinds["raw"] > total // 10
    assert outcomes["refused-load"] > total // 4
    assert outcomes["ran"] > total // 50 and outcomes["ran-same-model"] > total // 50, outcomes


def test_same_model_other_bytes_gives_the_seed_outputs(target):
    """Re-encoded tensors (raw <-> Deep Compression with other options), reordered sections,
    a stored (not deflated) header, extra meta: the oracle compares outputs bit for bit."""
    def reencode(meta, sections):
        for name in ("fc2.weight", "fc3.weight"):
            w = codec.model.ModelFile("m", {}, meta["tensors"], {}, sections).tensor(name)
            e = codec.compressed.encode(w, index_bits=8, huffman_index=True, store="sparse")
            meta["tensors"][name], sections[name] = e.entry, e.data
        meta["tensors"]["fc1.bias"] = {"enc": "raw"}
        sections["fc1.bias"] = sections["fc1.bias"].astype(np.float16)   # exact: was f16
        meta["meta"]["extra"] = [1, 2]
    data = _edit("dc-mlp.lbm", reencode)
    assert target.check(data) == "ran-same-model"
    meta, sections = lbfuzz.unsign(_seed("float-mixed.lbm"))
    data = lbfuzz.sign(meta, list(reversed(sections)), deflate=False)
    assert target.check(data) == "ran-same-model"


# -- one reproducer per loader bug fuzzing found (fixed in lowbit.codec) ----------------------

REGRESSIONS = sorted((lbfuzz.HERE / "regressions").glob("*.lbm"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_inputs_fuzzing_found_stay_fixed(target, path):
    """The inputs the fuzzer (and the deterministic driver) stopped on, as found: a clean
    refusal now, or (ran-*: former runtime findings, fixed in the runtime) a run on which both
    executors agree."""
    before = target.stats.get("executors-differ", 0)
    outcome = target.check(path.read_bytes())
    if path.stem.startswith("ran-"):
        assert outcome in ("ran", "ran-same-model"), outcome
        assert target.stats.get("executors-differ", 0) == before, "the executors disagree"
    else:
        assert outcome == "refused-load", outcome


def test_there_are_regression_inputs():
    assert len(REGRESSIONS) >= 10

def _hook(key, value):
    def hook(entries):          # the first array section's entry
        next(e for e in entries if e["kind"] == "array")[key] = value
    return hook


@pytest.mark.parametrize("hook, match", [
    (_hook("name", ["a"]), "malformed section entry"),               # was TypeError (unhashable)
    (_hook("offset", float("inf")), "malformed section entry"),      # was OverflowError
    (_hook("dtype", "(2,)<f4"), "unsupported dtype"),                # subarray dtype
    (_hook("shape", [0, 2**62, 2**62]), "too large"),                # numpy's size overflow
    (_hook("shape", "12"), "bad shape"),                             # iterated characters
])
def test_section_table_refusals(hook, match):
    meta, sections = lbfuzz.unsign(_seed("dc-mlp.lbm"))
    with pytest.raises(FormatError, match=match):
        container.decode(lbfuzz.sign(meta, sections, entry_hook=hook))


def _set_pad_bits(meta, sections):
    w = sections["conv2.weight"].copy()          # C = 5 channels: bits 5..63 are padding
    w[0, 0, 0, 0] |= np.uint64(1 << 40)
    sections["conv2.weight"] = w


def _ternary_sign_outside_mask(meta, sections):
    w = sections["tern.weight"].copy()
    w[0] |= ~w[1] & np.uint64(1)
    sections["tern.weight"] = w


def _planes_bits(meta, sections):
    meta["tensors"]["dorefa.weight"]["bits"] = 3       # the section holds 2 planes
    _op(meta, "dorefa")["w_bits"] = 3


def _dc_huge(meta, sections):
    meta["tensors"]["fc1.weight"]["shape"] = [48, 2**40]


def _huffman_count(meta, sections):
    meta["tensors"]["fc1.weight"]["n"] = 10**12


def _flip_two(meta, sections):
    f = sections["conv2.flip"].copy()
    f[0] = 2
    sections["conv2.flip"] = f


def _threshold_matrix(meta, sections):
    sections["conv2.thr"] = sections["conv2.thr"].reshape(1, -1)


def _op_kind_dict(meta, sections):
    meta["graph"]["ops"][1]["op"] = {"a": 1}


def _float_layer_bits(meta, sections):
    op = _op(meta, "fc2")
    op.update(out="bits", threshold="conv2.thr", flip="conv2.flip")


def _weight_null(meta, sections):
    _op(meta, "conv2")["weight"] = None


def _act_quant_bool(meta, sections):
    meta["graph"]["ops"].insert(2, {"op": "act_quant", "bits": True, "inputs": ["pool1"],
                                    "outputs": ["aq"]})


def _a_bits_huge(meta, sections):
    _op(meta, "dorefa")["a_bits"] = 10**30        # 2 ** a_bits - 1 would never finish


def _pool_on_float(meta, sections):
    _op(meta, "tern")["pool"] = {"kernel": [2, 2], "stride": [2, 2]}


def _upsample_huge(meta, sections):
    for op in meta["graph"]["ops"]:
        if op["op"] == "upsample":
            op["scale"] = [2**20, 2**20]


def _input_two_dims(meta, sections):
    meta["graph"]["inputs"][0]["shape"] = [16, 16]


def _mean_two_std_three(meta, sections):
    meta["graph"]["inputs"][0]["normalization"].update(mean=[0.1, 0.2], std=[0.2, 0.2, 0.2])


def _negative_var(meta, sections):
    v = sections["bn1.running_var"].copy()
    v[0] = -1.0
    sections["bn1.running_var"] = v


def _tensor_entry_string(meta, sections):
    meta["tensors"]["bn1.weight"] = "raw"


def _qdense_kernel(meta, sections):
    _op(meta, "fc2")["kernel"] = [2, 2]


@pytest.mark.parametrize("seed, edit, match", [
    ("bnn-lenet5.lbm", _set_pad_bits, "pad bits past channel 5"),
    ("quant-mixed.lbm", _ternary_sign_outside_mask, "sign bits set on zero weights"),
    ("quant-mixed.lbm", _planes_bits, "section of shape"),
    ("dc-mlp.lbm", _dc_huge, "more than the"),
    ("dc-mlp.lbm", _huffman_count, "cannot fit"),
    ("bnn-lenet5.lbm", _flip_two, "'flip': values must be 0 or 1"),
    ("bnn-lenet5.lbm", _threshold_matrix, "expected a vector"),
    ("bnn-lenet5.lbm", _op_kind_dict, "unknown op"),
    ("bnn-lenet5.lbm", _float_layer_bits, "needs a layer on the bitwise kernels"),
    ("bnn-lenet5.lbm", _weight_null, "'weight': expected a tensor name"),
    ("bnn-lenet5.lbm", _act_quant_bool, "'bits': expected an integer 1..16"),
    ("quant-mixed.lbm", _a_bits_huge, "'a_bits': expected an integer 1..32"),
    ("quant-mixed.lbm", _pool_on_float, "only a qconv2d layer with out 'bits'"),
    ("float-mixed.lbm", _upsample_huge, "more than the"),
    ("float-mixed.lbm", _input_two_dims, r"expected \[C, H, W\]"),
    ("float-mixed.lbm", _mean_two_std_three, "2 values for 3 input channels"),
    ("bnn-lenet5.lbm", _negative_var, "running variance is negative"),
    ("bnn-lenet5.lbm", _tensor_entry_string, "not an object with an 'enc' string"),
    ("bnn-lenet5.lbm", _qdense_kernel, "a qdense layer has kernel"),
])
def test_fixed_findings_are_clean_refusals(target, seed, edit, match):
    data = _edit(seed, edit)
    assert target.check(data) == "refused-load"
    from lowbit.runtime import Runtime
    with pytest.raises(FormatError, match=match) as e:
        with open(target.path, "wb") as f:
            f.write(data)
        Runtime(target.path)
    assert str(e.value).startswith(target.path)


# -- runtime findings the fuzzer reported, fixed in the runtime: they run, and both executors
# agree (lbfuzz.KNOWN is empty again; a new entry there needs a case of its own here)

def _known_spatial_dense_float(meta, sections):
    ops = meta["graph"]["ops"]
    i = next(k for k, op in enumerate(ops) if op["op"] == "flatten")
    ops.insert(i, {"op": "act_quant", "bits": 2, "inputs": ops[i]["inputs"], "outputs": ["aq"]})
    ops[i + 1]["inputs"] = ["aq"]


def _known_bits_output(meta, sections):
    meta["graph"]["outputs"] = [_op(meta, "fc1")["outputs"][0]]


def _known_bits_concat(meta, sections):
    ops = meta["graph"]["ops"]
    flat, fc1 = next(op for op in ops if op["op"] == "flatten"), _op(meta, "fc1")
    ops.append({"op": "concat", "inputs": [flat["outputs"][0], fc1["outputs"][0]],
                "outputs": ["cat"]})


def _known_nan_sign(meta, sections):
    # finite weights whose products overflow: the conv's sums meet +inf and -inf -> NaN
    sections["conv1.weight"] = np.full(sections["conv1.weight"].shape, 1e38, np.float32)


@pytest.mark.parametrize("key, seed, edit", [
    ("spatial-dense-float-input", "bnn-lenet5.lbm", _known_spatial_dense_float),
    ("flat-bits-layout", "bnn-lenet5.lbm", _known_bits_output),
    ("flat-bits-layout", "bnn-lenet5.lbm", _known_bits_concat),
    ("nan-sign", "quant-mixed.lbm", _known_nan_sign),
])
def test_former_runtime_findings_run_and_agree(target, key, seed, edit):
    """Each former entry of lbfuzz.KNOWN now runs, and the native and Python executors give
    the same outputs -- except after a float overflow (nan-sign: sums of 1e38 weights meet
    +inf and -inf in an order that differs between Eigen and numpy, so which outputs are NaN
    and which are inf differs; NaN itself packs as -1 in both: test_sign_of_nan_is_minus_one)."""
    assert key not in lbfuzz.KNOWN
    before = target.stats.get("executors-differ", 0)
    assert target.check(_edit(seed, edit)) == "ran"
    if key != "nan-sign":
        assert target.stats.get("executors-differ", 0) == before, "the executors disagree"


def test_sign_of_nan_is_minus_one():
    """The Python executor's sign packs NaN as -1 (NaN >= 0 is false), like torch's
    where(x >= 0, 1, -1) and the native executor; the bitpack kernel alone refuses NaN."""
    from lowbit.runtime import kernels
    from lowbit.runtime.ops import sign_bits
    rng = np.random.default_rng(0)
    for f in (1, 31, 32, 33, 63, 64, 65, 129):
        x = rng.standard_normal((3, f)).astype(np.float32)
        x[rng.random(x.shape) < 0.3] = np.nan
        want = sign_bits(np.where(np.isnan(x), np.float32(-1), x))
        assert np.array_equal(sign_bits(x).words, want.words)
        x4 = x.reshape(3, f, 1, 1)
        assert np.array_equal(sign_bits(x4).words, want.words)
        with pytest.raises(ValueError, match="NaN"):
            kernels.bitpack(x)


def test_flat_bits_output_has_the_graph_shape(tmp_path):
    """A dense layer's folded bits as a graph output: (N, F) as the graph says, +-1 values,
    from both executors."""
    from lowbit.runtime import Runtime
    path = tmp_path / "m.lbm"
    path.write_bytes(_edit("bnn-lenet5.lbm", _known_bits_output))
    x = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    outs = [Runtime(path, executor=ex).run(x) for ex in (None, "python")]
    for out in outs:
        (v, y), = out.items()
        assert y.ndim == 2 and y.shape[0] == 3 and set(np.unique(y)) <= {-1.0, 1.0}
    assert np.array_equal(*[next(iter(o.values())) for o in outs])


def test_unclean_refusals_are_findings(target, monkeypatch):
    """The oracle itself: a ValueError that does not name the file, or another exception
    type, fails the case."""
    from lowbit.runtime import graph as rg
    real = rg.Runtime.__init__

    def bad(self, *a, **k):
        raise ValueError("cannot reshape array of size 3 into shape (2,)")
    monkeypatch.setattr(rg.Runtime, "__init__", bad)
    with pytest.raises(lbfuzz.Finding, match="does not name the file"):
        target.check(_seed("dc-mlp.lbm"))

    def worse(self, *a, **k):
        raise IndexError("index 3 is out of bounds")
    monkeypatch.setattr(rg.Runtime, "__init__", worse)
    with pytest.raises(IndexError):
        target.check(_seed("dc-mlp.lbm"))
    monkeypatch.setattr(rg.Runtime, "__init__", real)
    assert re.match(r"ran", target.check(_seed("dc-mlp.lbm")))
