"""The native whole-graph executor (csrc/graph, lowbit.runtime.native) against the Python
executor (the living spec) and torch eval: every recipe of test_export.CASES, every graph-v2
op of test_dag.SINGLE and the three test-only models, at 1 and 2 threads, on every compiled
CPU path this machine runs; integer accumulators identical; every run in poison mode (each
freed arena buffer is filled with 0xFF between ops, so a plan that aliased two live values
would change the answers); inconsistent plans refused naming the op."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.data import Normalization
from lowbit.runtime import kernels as K
from lowbit.runtime.graph import Runtime
from lowbit.train.checkpoint import build_model
from lowbit.train.export import export_model

from test_dag import C, NORM1, NORM3, SINGLE, RGBNet, ResidualBinary, _float_bn_net, _fmnist
from test_export import BITWISE, CASES, NORM, randomize_bn, torch_accumulators

torch.set_num_threads(1)
PATHS = [p for p in K.available_paths() if p != "ref"]
pytestmark = pytest.mark.skipif(not PATHS or not hasattr(K._kernels, "Graph"),
                                reason="no compiled kernels")


def _close(out, ref, what=""):
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), what


def _check(path, ref, acc, images, normalized, bitwise=(), paths=None):
    """native == python == torch on every path and thread count (poison mode)."""
    for kpath in paths or PATHS:
        for threads in (1, 2):
            what = f"{kpath}, {threads} thread(s)"
            rn = Runtime(path, threads=threads, kernel=kpath, executor="native")
            assert rn.executor == "native" and rn.native.path == kpath
            rn._poison = True
            rp = Runtime(path, threads=threads, kernel=kpath, executor="python")
            rec_n, rec_p = {}, {}
            out_n = rn.run(images, record=rec_n, normalized=normalized)
            out_p = rp.run(images, record=rec_p, normalized=normalized)
            for k, v in enumerate(rn.outputs):
                n = out_n[v].reshape(len(images), -1)
                _close(n, ref[k].reshape(len(images), -1), f"{what}: native vs torch, {v}")
                _close(n, out_p[v].reshape(len(images), -1), f"{what}: native vs python, {v}")
            assert set(rec_n) == set(rec_p) and set(bitwise) <= set(rec_n), what
            for name, a in rec_n.items():
                np.testing.assert_array_equal(a, rec_p[name], err_msg=f"{name}, {what}")
                if acc is not None:
                    np.testing.assert_array_equal(a, acc[name].astype(np.int64), err_msg=f"{name}, {what}")
    return rn


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    try:
        from lowbit.data import load
        imgs = np.concatenate([imgs, load("test")[0][:12]])
    except Exception:
        pass
    return imgs


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{k}" if k else n for n, k in CASES])
def test_recipes_native_equals_python_and_torch(name, kwargs, images, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    randomize_bn(model)
    model.eval()
    path = tmp_path / "m.lbm"
    export_model(model, path, NORM)
    x = torch.from_numpy(Normalization.from_dict(NORM).apply(images))
    with torch.no_grad():
        ref = model(x).numpy()
    acc = torch_accumulators(model, x)
    bitwise = set(BITWISE.get(name, ()))
    if name == "dorefa-lenet5" and kwargs.get("bits", "1,2,6").split(",")[1] == "16":
        bitwise = set()
    rn = _check(path, [ref], acc, images, False, bitwise)
    np.testing.assert_array_equal(rn.predict(images, batch=7), ref.argmax(1))


@pytest.mark.parametrize("name", list(SINGLE))
def test_each_graph_op_native(name, tmp_path):
    torch.manual_seed(0)
    model = SINGLE[name]
    randomize_bn(model)
    model.eval()
    x = np.random.default_rng(1).standard_normal((3, C, 8, 8)).astype(np.float32)
    x[0, 0, 0, :3] = 0.0
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    refs = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else [ref])]
    _check(path, refs, None, x, True)


def test_linear_batchnorm1d_prelu_native(tmp_path):
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * 16, 20), nn.BatchNorm1d(20), nn.PReLU(20),
                          nn.Linear(20, 4))
    randomize_bn(model)
    model.eval()
    x = np.random.default_rng(2).standard_normal((5, C, 4, 4)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    rn = _check(path, [ref], None, x, True)
    # BN and PReLU run fused into the first dense layer's output program
    assert rn.native.fused == {2: 1, 3: 1}


@pytest.mark.parametrize("make,norm,channels,size", [
    (ResidualBinary, NORM1, 1, 28), (RGBNet, NORM3, 3, 32), (_float_bn_net, NORM1, 1, 28)],
    ids=["residual-binary", "rgb-3x32x32", "float-bn"])
def test_test_only_models_native(make, norm, channels, size, tmp_path):
    torch.manual_seed(0)
    model = make()
    randomize_bn(model)
    model.eval()
    images = _fmnist(200, channels, size)
    path = tmp_path / "m.lbm"
    export_model(model, path, norm, input_shape=(channels, size, size))
    mean = np.asarray(norm["mean"], np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(norm["std"], np.float64).reshape(1, -1, 1, 1)
    x = ((images / 255.0 - mean) / std).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    acc = torch_accumulators(model, torch.from_numpy(x))
    _check(path, [ref], acc, images, False)


def test_forced_variants_and_environment(images, tmp_path, monkeypatch):
    """A forced micro-kernel variant and LOWBIT_KERNEL reach every native op."""
    torch.manual_seed(0)
    model = build_model("twn-lenet5").eval()
    randomize_bn(model)
    export_model(model, tmp_path / "t.lbm", NORM)
    model2 = build_model("bnn-vgg-small", width=0.5).eval()
    randomize_bn(model2)
    export_model(model2, tmp_path / "v.lbm", NORM)
    for p in ("t.lbm", "v.lbm"):
        want = Runtime(tmp_path / p, executor="python").logits(images)
        for path in PATHS:
            for variant in K.bgemm_variants(path) and __import__(
                    "lowbit.runtime.bitconv", fromlist=["x"]).xconv_variants(path):
                if variant.startswith("masked-") and p == "v.lbm":
                    continue
                rn = Runtime(tmp_path / p, kernel=path, variant=variant, executor="native")
                rn._poison = True
                _close(rn.logits(images), want, f"{p} {path}/{variant}")
    monkeypatch.setenv("LOWBIT_KERNEL", PATHS[0])
    rn = Runtime(tmp_path / "v.lbm")
    assert rn.executor == "native" and rn.native.path == PATHS[0]
    assert {l.pw.path for l in rn.layers.values() if l.kind != "float"} == {PATHS[0]}
    monkeypatch.setenv("LOWBIT_KERNEL", "ref")
    assert Runtime(tmp_path / "v.lbm").executor == "python"        # ref: the numpy reference
    with pytest.raises(ValueError, match="native executor cannot run"):
        Runtime(tmp_path / "v.lbm", executor="native")
    monkeypatch.delenv("LOWBIT_KERNEL")
    monkeypatch.setenv("LOWBIT_EXECUTOR", "python")
    assert Runtime(tmp_path / "v.lbm").executor == "python"
    with pytest.raises(ValueError, match="executor"):
        Runtime(tmp_path / "v.lbm", executor="fast")


def test_arena_reuses_memory_and_profile(images, tmp_path):
    model = build_model("bnn-vgg-small").eval()
    export_model(model, tmp_path / "v.lbm", NORM)
    rt = Runtime(tmp_path / "v.lbm")
    g = rt.native.g
    assert 0 < g.arena_bytes(64) < 0.7 * g.unshared_bytes(64)     # buffers share memory
    assert g.arena_bytes(1) <= g.arena_bytes(64)
    prof = rt.profile_ops(images[:1], calls=2)
    names = {r["name"] for r in prof}
    assert {rt.op_label(i) for i, op in enumerate(rt.ops)} <= names   # fused / aliased: 0 ms
    assert all(r["ms"] >= 0 for r in prof)


def _graph_with_input(h=8, w=8, c=4):
    g = K._kernels.Graph(1)
    g.add_op("input", "graph input", [], {"h": h, "w": w, "c": c,
                                         "table": np.zeros((c, 256), np.float32)})
    return g


def test_inconsistent_plans_are_refused_naming_the_op():
    g = _graph_with_input()
    with pytest.raises(ValueError, match=r"op 1 'c1' \(conv2d\): array 'weight' has 10 elements, expected 108"):
        g.add_op("fconv", "op 1 'c1' (conv2d)", [0], dict(kh=3, kw=3, sh=1, sw=1, ph=0, pw=0, pad=0.0,
                                                       oc=3, b_trans=0, weight=np.zeros(10, np.float32)))
    with pytest.raises(ValueError, match=r"op 2 'p' \(maxpool2d\): window does not fit"):
        g.add_op("maxpool", "op 2 'p' (maxpool2d)", [0], dict(kh=9, kw=9, sh=1, sw=1))
    with pytest.raises(ValueError, match=r"op 3 \(add\): input value 7 is not defined"):
        g.add_op("add", "op 3 (add)", [0, 7], {})
    with pytest.raises(ValueError, match=r"op 4 \(add\): input shapes differ"):
        v = g.add_op("maxpool", "op 4a", [0], dict(kh=2, kw=2, sh=2, sw=2))
        g.add_op("add", "op 4 (add)", [0, v], {})
    with pytest.raises(ValueError, match=r"op 5 \(batchnorm\): array 'step0.a' has 3 elements, expected 4"):
        g.add_op("ew", "op 5 (batchnorm)", [0], {"steps": 1, "step0": 5, "step0.a": np.zeros(3),
                                                 "step0.b": np.zeros(4)})
    with pytest.raises(ValueError, match=r"op 6 \(sign\): expected a float input"):
        b = g.add_op("tobits", "op 6a", [0], {"path": PATHS[0]})
        g.add_op("tobits", "op 6 (sign)", [b], {"path": PATHS[0]})
    words = K._kernels.xconv_packed_words(5, 9, PATHS[0], "")
    base = dict(source=0, path=PATHS[0], variant="", xkind=0, oc=5, c=4, kh=3, kw=3, sh=1, sw=1,
                ph=1, pw=1, pad_value=-1, w_bits=1, packed=np.zeros(words, np.uint64),
                w_pop=np.zeros(0, np.int32), bits_out=1, thr=np.zeros(5, np.int32),
                flip=np.zeros(5, np.uint8))
    assert g.value(g.add_op("qlayer", "op 7 ok", [b], base)) == [1, 8, 8, 5]
    bad = [({"packed": np.zeros(words - 1, np.uint64)}, "array 'packed' has"),
           ({"thr": np.zeros(4, np.int32)}, "array 'thr' has 4 elements, expected 5"),
           ({"flip": np.full(5, 2, np.uint8)}, "flip must be 0 or 1"),
           ({"c": 3}, "in_channels 3 but the input has 4"),
           ({"pad_value": 0}, "missing array 'tap_sums'"),
           ({"source": 1}, "input kind does not match"),
           ({"path": "nope"}, "kernel path 'nope' does not run on this CPU"),
           ({"pool": 1, "pool.kh": 9, "pool.kw": 9, "pool.sh": 1, "pool.sw": 1}, "window does not fit")]
    for change, msg in bad:
        with pytest.raises(ValueError, match=r"op 8 'fc' \(qdense\): " + msg):
            g.add_op("qlayer", "op 8 'fc' (qdense)", [b], dict(base, **change))


def test_runtime_refuses_a_corrupted_plan(tmp_path, monkeypatch):
    """What the native plan relies on is checked again in C++: a layer whose thresholds do
    not match its channels (as if an edit got past the codec checks) is refused at load."""
    from lowbit.runtime import ops
    model = build_model("bnn-lenet5").eval()
    export_model(model, tmp_path / "m.lbm", NORM)
    real = ops.QLayer.__init__

    def corrupt(self, op, *a, **k):
        real(self, op, *a, **k)
        if self.name == "conv2":
            self.thr = self.thr[:-1]
    monkeypatch.setattr(ops.QLayer, "__init__", corrupt)
    with pytest.raises(ValueError, match=r"graph op 3 'conv2' \(qconv2d\): array 'thr' has 49"):
        Runtime(tmp_path / "m.lbm", executor="native")


def test_concurrent_calls_take_turns(images, tmp_path):
    """One Runtime used from several Python threads at once: each call gets its own answers
    (the native executor has one arena; calls take turns, GIL released while they run)."""
    import threading
    model = build_model("bnn-lenet5").eval()
    randomize_bn(model)
    export_model(model, tmp_path / "m.lbm", NORM)
    rt = Runtime(tmp_path / "m.lbm", threads=2)
    batches = [images[i:i + 1 + i % 5] for i in range(12)]
    want = [rt.logits(b) for b in batches]
    got: dict = {}
    recs: dict = {}

    def work(k):
        for _ in range(20):
            rec: dict = {}
            got[k] = rt.logits(batches[k], record=rec)
            recs[k] = rec
    ts = [threading.Thread(target=work, args=(k,)) for k in range(len(batches))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for k, b in enumerate(batches):
        np.testing.assert_array_equal(got[k], want[k])
        assert recs[k]["conv2"].shape[0] == len(b)


def test_nonfinite_float_input_refused(tmp_path):
    """Normalised float32 input skips the Python isfinite pass; the native input op refuses
    NaN / inf itself, with the input contract's error."""
    from lowbit.runtime.inputs import InputError
    model = build_model("bnn-lenet5").eval()
    export_model(model, tmp_path / "m.lbm", NORM)
    rt = Runtime(tmp_path / "m.lbm")
    assert rt.executor == "native"
    x = np.zeros((3, 1, 28, 28), np.float32)
    assert rt.logits(x, normalized=True).shape == (3, 10)
    for bad in (np.nan, np.inf, -np.inf):
        x[2, 0, 5, 7] = bad
        with pytest.raises(InputError, match="NaN or inf"):
            rt.logits(x, normalized=True)
    np.testing.assert_array_equal(rt.logits(np.zeros((3, 1, 28, 28), np.float32), normalized=True),
                                  rt.logits(np.zeros((3, 1, 28, 28), np.float32) + 0, normalized=True))


@pytest.mark.parametrize("oc", [20, 64, 128, 130])
@pytest.mark.parametrize("between", ["none", "maxpool"])
def test_float_conv_with_fused_sign_and_threshold(oc, between, tmp_path):
    """A float conv whose output only a sign (or a BN read only by signs) reads emits the bits
    itself, also through a max pool (OR / AND by the BN's direction): every channel count
    (under one word, whole words, words + a tail) equals torch, bit for bit."""
    from torch import nn
    from lowbit.train.layers import QuantConv2d
    torch.manual_seed(0)
    pool = nn.MaxPool2d(2) if between == "maxpool" else nn.Identity()
    sign_layer = QuantConv2d(oc, 8, 3, padding=1, bias=False, input_quantizer="ste_sign",
                             weight_quantizer="ste_sign")
    model = nn.Sequential(nn.Conv2d(2, oc, 3, padding=1), pool, nn.BatchNorm2d(oc), sign_layer)
    randomize_bn(model)
    model.eval()
    x = np.random.default_rng(4).standard_normal((5, 2, 10, 10)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    acc = torch_accumulators(model, torch.from_numpy(x))
    rn = _check(path, [ref], acc, x, True)
    assert any(op["op"] == "batchnorm" for op in rn.ops) and rn.native.fused


# The direct float conv (csrc/graph/fconv_direct.h: few input channels, output channels in the
# vector lanes; portable = the reference twin, avx2, avx512) at word-edge channel counts, with
# its fused compare-into-bits (sign / BatchNorm thresholds with flips, also before a bits max
# pool) and with a float output program; against torch and the Python executor on every path,
# and against the im2col + GEMM path (LOWBIT_FCONV_DIRECT=0).
_GEOMETRY = [(1, 5, 1, 0), (1, 3, 1, 1), (2, 3, 2, 1), (3, 3, 1, 1), (3, 5, 2, 2)]  # cin, k, stride, pad


@pytest.mark.parametrize("tail", ["float", "bn-sign", "pool-bn-sign", "sign"])
@pytest.mark.parametrize("oc", [1, 31, 32, 33, 63, 64, 65, 127, 128, 129])
def test_direct_float_conv_word_edges(oc, tail, tmp_path, monkeypatch):
    from torch import nn
    from lowbit.train.layers import QuantConv2d
    from lowbit.train.quantizers import SteSign
    cin, k, stride, pad = _GEOMETRY[[1, 31, 32, 33, 63, 64, 65, 127, 128, 129].index(oc) % 5]
    torch.manual_seed(oc)
    conv = nn.Conv2d(cin, oc, k, stride=stride, padding=pad, bias=tail != "sign")
    if tail == "float":  # + a float max pool (avx2 / avx512 pixel kernels) at the same widths
        model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(3, stride=1) if oc % 2 else nn.MaxPool2d(2))
    else:
        sign_layer = QuantConv2d(oc, 4, 3, padding=1, bias=False, input_quantizer="ste_sign",
                                 weight_quantizer="ste_sign")
        mid = [nn.MaxPool2d(2)] if tail == "pool-bn-sign" else []
        mid += [nn.BatchNorm2d(oc)] if tail != "sign" else [SteSign()]
        model = nn.Sequential(conv, *mid, sign_layer)
    randomize_bn(model)
    model.eval()
    x = np.random.default_rng(oc).standard_normal((3, cin, 11, 11)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    acc = torch_accumulators(model, torch.from_numpy(x)) if tail != "float" else None
    rn = _check(path, [ref], acc, x, True)
    assert rn.native.fused or tail == "float"
    monkeypatch.setenv("LOWBIT_FCONV_DIRECT", "0")
    for kpath in PATHS:
        gemm = Runtime(path, kernel=kpath, executor="native").logits(x, normalized=True)
        _close(gemm, ref.reshape(len(x), -1), f"{kpath}: GEMM path vs torch")


def test_direct_conv_many_channels_small_calls(tmp_path, monkeypatch):
    """A LeNet-5-like stack at 1, 2, 5 and 20 images: the first layer on the direct conv, the
    convs with 20 / 50 input channels on the lane conv (fsparse.h LaneConv), == torch on every
    path at every batch size."""
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.ReLU(),
                          nn.Conv2d(50, 33, 3, padding=1)).eval()
    x = np.random.default_rng(5).standard_normal((5, 1, 20, 20)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for n in (1, 2, 5):
        _check(path, [ref[:n]], None, x[:n], True)
    xs = np.repeat(x, 4, axis=0)
    with torch.no_grad():
        refs = model(torch.from_numpy(xs)).numpy()
    _check(path, [refs], None, xs, True)


@pytest.mark.parametrize("density", [0.1, 0.25, 0.5])
def test_sparse_dense_layer(density, tmp_path, monkeypatch):
    """A dense layer with at most a quarter of its weights nonzero (a pruned Deep-Compression
    layer) runs the CSR product (csrc/graph/fsparse.h): batch 1 (scalar rows), a few rows
    (8-lane block), 16-row blocks and partial blocks, on every path, == torch, == the dense GEMM
    (LOWBIT_FCONV_SPARSE=0) within 1e-5."""
    from torch import nn
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 7 * 7, 129), nn.ReLU(), nn.Linear(129, 33)).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight[torch.rand(m.weight.shape) >= density] = 0.0
    x = np.random.default_rng(6).standard_normal((37, 3, 7, 7)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for n in (1, 2, 9, 16, 17, 37):
        _check(path, [ref[:n]], None, x[:n], True)
    monkeypatch.setenv("LOWBIT_FCONV_SPARSE", "0")
    for kpath in PATHS:
        dense = Runtime(path, kernel=kpath, executor="native").logits(x, normalized=True)
        _close(dense, ref, f"{kpath}: dense GEMM vs torch")


@pytest.mark.parametrize("oc", [1, 31, 32, 33, 63, 64, 65, 127, 128, 129])
def test_binary_conv_bits_stage_word_edges(oc, tmp_path):
    """A binary conv whose BatchNorm is read only by signs writes bits straight from the XOR
    counts (csrc/bconv/finish_x86.h on avx2 / avx512, finish_neon.h's reference loop
    elsewhere), with border-pixel padding corrections and decreasing (flipped) channels: the
    next binary layer's integer accumulators equal torch's on every path."""
    from torch import nn
    from lowbit.train.layers import QuantConv2d
    torch.manual_seed(oc)

    def binary(i, o):
        return QuantConv2d(i, o, 3, padding=1, bias=False, input_quantizer="ste_sign",
                           weight_quantizer="ste_sign")
    mid = [nn.MaxPool2d(2)] if oc % 2 else []
    model = nn.Sequential(binary(3, oc), *mid, nn.BatchNorm2d(oc), binary(oc, 5))
    randomize_bn(model)
    model.eval()
    x = np.random.default_rng(oc).standard_normal((4, 3, 9, 9)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    acc = torch_accumulators(model, torch.from_numpy(x))
    _check(path, [ref], acc, x, True, bitwise=set(acc))


@pytest.mark.parametrize("oc", [1, 31, 32, 33, 63, 64, 65, 127, 128, 129])
def test_sparse_conv_word_edges(oc, tmp_path, monkeypatch):
    """A stride-1 conv with at most half of its weights nonzero (a pruned Deep-Compression
    conv) runs the sparse conv (csrc/graph/fsparse.h: output pixels in the lanes, shifted
    input planes): output widths / pixel counts around the 8 / 16 / 64 / 128-pixel blocks,
    padding, on every path, == torch, == the dense path (LOWBIT_FCONV_SPARSE=0)."""
    from torch import nn
    torch.manual_seed(oc)
    size, k, pad = [(5, 3, 0), (6, 3, 1), (13, 5, 2), (12, 3, 0), (20, 5, 0)][oc % 5]  # 9..400 px
    cin = 5 + oc % 3
    model = nn.Sequential(nn.Conv2d(cin, oc, k, padding=pad), nn.ReLU()).eval()
    with torch.no_grad():
        w = model[0].weight
        w[torch.rand(w.shape) < 0.6] = 0.0
    x = np.random.default_rng(oc).standard_normal((3, cin, size, size)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    _check(path, [ref], None, x, True)
    monkeypatch.setenv("LOWBIT_FCONV_SPARSE", "0")
    for kpath in PATHS:
        dense = Runtime(path, kernel=kpath, executor="native").logits(x, normalized=True)
        _close(dense, ref.reshape(len(x), -1), f"{kpath}: dense path vs torch")


@pytest.mark.parametrize("oc", [1, 31, 32, 33, 63, 64, 65, 127, 128, 129])
def test_lane_conv_word_edges(oc, tmp_path, monkeypatch):
    """Stride-1 convs with more than 4 input channels and small input planes run the dense
    conv with the output pixels in the lanes (csrc/graph/fsparse.h LaneConv; channel blocks of
    6 / 2 / 1 on avx512 / avx2 / portable): pixel counts around the 8 / 16 / 32 / 64-pixel
    blocks, padding, bias + ReLU + a BatchNorm read by signs after it, on every path, == torch,
    == Python, == im2col + GEMM (LOWBIT_FCONV_DIRECT=0)."""
    from torch import nn
    from lowbit.train.layers import QuantConv2d
    torch.manual_seed(oc)
    size, k, pad = [(5, 3, 0), (6, 3, 1), (13, 5, 2), (12, 3, 0), (9, 5, 0)][oc % 5]  # 9..169 px
    cin = 5 + oc % 3
    sign_layer = QuantConv2d(oc, 4, 3, padding=1, bias=False, input_quantizer="ste_sign",
                             weight_quantizer="ste_sign")
    tail = [nn.ReLU()] if oc % 2 else [nn.BatchNorm2d(oc), sign_layer]
    model = nn.Sequential(nn.Conv2d(cin, oc, k, padding=pad), *tail)
    randomize_bn(model)
    model.eval()
    x = np.random.default_rng(oc).standard_normal((3, cin, size, size)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    acc = torch_accumulators(model, torch.from_numpy(x)) if not oc % 2 else None
    _check(path, [ref], acc, x, True)
    monkeypatch.setenv("LOWBIT_FCONV_DIRECT", "0")
    for kpath in PATHS:
        gemm = Runtime(path, kernel=kpath, executor="native").logits(x, normalized=True)
        _close(gemm, ref.reshape(len(x), -1), f"{kpath}: im2col + GEMM vs torch")


@pytest.mark.parametrize("oc", [1, 31, 32, 33, 63, 64, 65, 127, 128, 129])
def test_detector_stem_and_residual_blocks_word_edges(oc, tmp_path):
    """The detector's stages at word-edge channel counts (csrc/graph/float_rows.h, third
    executor round): a float conv -> max pool -> BatchNorm -> hardtanh (BN + hardtanh run in
    the pool's output stage), binary convs whose float BatchNorm (+ residual add, fused into
    the layer's output stage, also a ternary one and a stride-2 one with an average-pool
    shortcut) runs on each pixel's accumulators, signs of float rows packed by the row
    kernel, the shortcut's 1x1 float conv adding the other branch in its output stage, the
    input op writing the stem conv's zero border; == Python == torch on every path at 1 and 2
    threads in poison mode (portable = the reference twins), accumulators identical."""
    from torch import nn
    from lowbit.train.layers import QuantConv2d

    def q(i, o, stride=1, w="ste_sign"):
        return QuantConv2d(i, o, 3, stride=stride, padding=1, bias=False, input_quantizer="ste_sign",
                           weight_quantizer=w)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, oc, 3, stride=2, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.bn0 = nn.BatchNorm2d(oc)
            self.b1, self.bn1 = q(oc, oc), nn.BatchNorm2d(oc)
            self.b2, self.bn2 = q(oc, oc, w="ternary"), nn.BatchNorm2d(oc)
            self.down, self.bnd = q(oc, oc + 1, stride=2), nn.BatchNorm2d(oc + 1)
            self.short, self.bns = nn.Conv2d(oc, oc + 1, 1, bias=False), nn.BatchNorm2d(oc + 1)
            self.head, self.bnh = q(oc + 1, 5), nn.BatchNorm2d(5)

        def forward(self, x):
            x = nn.functional.hardtanh(self.bn0(self.pool(self.stem(x))))
            x = self.bn1(self.b1(x)) + x
            x = x + self.bn2(self.b2(x))
            x = self.bnd(self.down(x)) + self.bns(self.short(nn.functional.avg_pool2d(x, 2)))
            return torch.relu(self.bnh(self.head(x)))

    torch.manual_seed(oc)
    model = Net()
    randomize_bn(model)
    model.eval()
    size = [(16, 24), (24, 16), (24, 32)][oc % 3]
    images = np.random.default_rng(oc).integers(0, 256, (3, 3) + size, dtype=np.uint8)
    path = tmp_path / "m.lbm"
    export_model(model, path, NORM3, input_shape=images.shape[1:])
    mean = np.asarray(NORM3["mean"], np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(NORM3["std"], np.float64).reshape(1, -1, 1, 1)
    x = ((images / 255.0 - mean) / std).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    acc = torch_accumulators(model, torch.from_numpy(x))
    rn = _check(path, [ref], acc, images, False, bitwise=set(acc))
    fused = [rn.ops[j]["op"] for j in rn.native.fused]
    assert {"maxpool2d", "batchnorm", "hardtanh"} <= set(fused) and fused.count("add") == 3, fused
    assert rn.native.prepadded == 0             # the input op writes the stem's zero border


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("pixels", [1, 15, 16, 17, 31, 33, 63, 65, 129])
def test_input_tables_every_path(channels, pixels, tmp_path):
    """The graph input (uint8 pixels through the normalisation tables, NCHW -> NHWC; avx512:
    one gather per channel and 16 pixels, 3 channels interleaved by permutes, a scalar tail)
    gives the tables' values on every path: the (clamp) identity model's output is the normalised
    image, bit for bit; normalised float input is copied as it is, and a NaN / inf anywhere
    (here: the last pixel, in the tail or a vector) is refused."""
    from torch import nn
    from lowbit.runtime.inputs import InputError
    norm = {"mean": [0.2, 0.15, 0.1][:channels], "std": [0.3, 0.25, 0.2][:channels], "scale": 255.0}
    model = nn.Sequential(nn.Hardtanh(-1e3, 1e3)).eval()       # the identity on these values
    images = np.random.default_rng(pixels).integers(0, 256, (2, channels, 1, pixels), dtype=np.uint8)
    path = tmp_path / "m.lbm"
    export_model(model, path, norm, input_shape=images.shape[1:])
    want = Runtime(path, executor="python").run(images)
    x = np.random.default_rng(pixels + 1).standard_normal(images.shape).astype(np.float32)
    want_f = Runtime(path, executor="python").run(x, normalized=True)
    for kpath in PATHS:
        rn = Runtime(path, kernel=kpath, executor="native")
        got, got_f = rn.run(images), rn.run(x, normalized=True)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=kpath)
            np.testing.assert_array_equal(got_f[k], want_f[k], err_msg=f"{kpath}, float input")
        for bad in (np.nan, np.inf):           # NaN / inf in the last pixel: refused
            xb = x.copy()
            xb[-1, -1, 0, -1] = bad
            with pytest.raises(InputError):
                rn.run(xb, normalized=True)


@pytest.mark.parametrize("cin", [1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129])
def test_small_oc_pointwise_conv(cin, tmp_path):
    """1x1 convs with 1-8 output channels (a detector's heads) run the small-oc kernel on
    avx512 (csrc/graph/float_rows.h: K in the lanes, masked last chunk) and the float GEMM
    elsewhere (its reference): == torch and == Python within 1e-5 on every path, input channel
    counts around the 16-float chunks, with a bias and a ReLU after."""
    from torch import nn

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(cin, 1, 1), nn.Conv2d(cin, 5, 1), nn.Conv2d(cin, 8, 1, bias=False)

        def forward(self, x):
            return torch.cat([self.a(x), torch.relu(self.b(x)), self.c(x)], 1)

    torch.manual_seed(cin)
    model = Heads().eval()
    x = np.random.default_rng(cin).standard_normal((2, cin, 5, 7)).astype(np.float32)
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    _check(path, [ref], None, x, True)
