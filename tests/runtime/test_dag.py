"""Graph v2 end to end: fx export of every supported op, alone and in branches, against torch;
three models defined only here (a residual binary net, an RGB 3x32x32 net, a float net with
BatchNorm); v1 files still run; refusals name the node."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit import codec
from lowbit.runtime.graph import Runtime
from lowbit.train.export import ExportError, build_graph, export_model
from lowbit.train.layers import QuantConv2d, QuantLinear

from test_export import randomize_bn, torch_accumulators

torch.set_num_threads(1)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _close(out, ref):
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def _run_both(model, x: np.ndarray, tmp_path, threads=1):
    """Runtime.run vs torch eval on float input x (N, C, H, W); returns the runtime."""
    model.eval()
    path = tmp_path / "m.lbm"
    export_model(model, path, None, input_shape=x.shape[1:])
    rt = Runtime(path, threads=threads)
    out = rt.run(x, normalized=True)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    refs = ref if isinstance(ref, (tuple, list)) else [ref]
    assert len(refs) == len(rt.outputs)
    for v, r in zip(rt.outputs, refs):
        _close(out[v], r.numpy())
    return rt


class Lambda(nn.Module):
    def __init__(self, fn, *mods):
        super().__init__()
        self.mods = nn.ModuleList(mods)
        self.fn = fn

    def forward(self, x):
        return self.fn(self, x)


C = 6
SINGLE = {
    "conv-stride2": nn.Conv2d(C, 5, 3, stride=2, padding=1),
    "conv-1x1": nn.Conv2d(C, 7, 1, bias=False),
    "batchnorm2d": nn.BatchNorm2d(C),
    "maxpool": nn.MaxPool2d(2),
    "maxpool-3s2": nn.MaxPool2d(3, 2),
    "avgpool": nn.AvgPool2d(2),
    "avgpool-pad": nn.AvgPool2d(3, 1, 1),
    "avgpool-pad-exclusive": nn.AvgPool2d(3, 2, 1, count_include_pad=False),
    "global-module": nn.AdaptiveAvgPool2d(1),
    "upsample": nn.Upsample(scale_factor=2, mode="nearest"),
    "relu": nn.ReLU(),
    "relu6": nn.ReLU6(),
    "hardtanh": nn.Hardtanh(-0.5, 0.7),
    "prelu-1": nn.PReLU(),
    "prelu-c": nn.PReLU(C),
    "flatten": nn.Flatten(),
    "sign": __import__("lowbit.train.quantizers", fromlist=["SteSign"]).SteSign(),
    "act-quant": __import__("lowbit.train.quantizers", fromlist=["x"]).DorefaActivation(2),
    "act-clip": __import__("lowbit.train.quantizers", fromlist=["x"]).DorefaActivation(32),
    "f-global": Lambda(lambda s, x: F.adaptive_avg_pool2d(x, 1)),
    "mean-hw": Lambda(lambda s, x: x.mean((2, 3))),
    "interpolate": Lambda(lambda s, x: F.interpolate(x, scale_factor=2, mode="nearest")),
    "f-avgpool": Lambda(lambda s, x: F.avg_pool2d(x, 2)),
    "f-maxpool": Lambda(lambda s, x: F.max_pool2d(x, 2, 2)),
    "clamp": Lambda(lambda s, x: torch.clamp(x, -0.3, 0.4)),
    "view": Lambda(lambda s, x: x.view(x.size(0), -1)),
    "flatten-fn": Lambda(lambda s, x: torch.flatten(x, 1)),
    "add-branches": Lambda(lambda s, x: s.mods[0](x) + F.relu(x), nn.Conv2d(C, C, 3, padding=1)),
    "cat-branches": Lambda(lambda s, x: torch.cat([s.mods[0](x), x, F.relu(x)], dim=1),
                           nn.Conv2d(C, 3, 1)),
    "add3": Lambda(lambda s, x: torch.add(x, s.mods[0](x)) + x, nn.BatchNorm2d(C)),
    "two-outputs": Lambda(lambda s, x: (s.mods[0](x), F.relu(x)), nn.Conv2d(C, 2, 1)),
}


@pytest.mark.parametrize("name", list(SINGLE))
def test_each_op_matches_torch(name, tmp_path):
    torch.manual_seed(0)
    model = SINGLE[name]
    randomize_bn(model)
    x = np.random.default_rng(1).standard_normal((3, C, 8, 8)).astype(np.float32)
    x[0, 0, 0, :3] = 0.0          # sign(0) = +1, act_quant ties
    _run_both(model, x, tmp_path)


def test_linear_and_batchnorm1d(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * 16, 20), nn.BatchNorm1d(20), nn.PReLU(20),
                          nn.Linear(20, 4))
    randomize_bn(model)
    x = np.random.default_rng(2).standard_normal((5, C, 4, 4)).astype(np.float32)
    _run_both(model, x, tmp_path)


# ---- three models defined only here -------------------------------------------------------
class ResidualBinary(nn.Module):
    """Bi-Real-style: a real shortcut around each binary conv; one branch whose BN is read only
    by signs (folded to thresholds inside a branch); a downsampling shortcut."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.b1 = QuantConv2d(c, c, 3, padding=1, bias=False, input_quantizer="ste_sign",
                              weight_quantizer="ste_sign")
        self.bn1 = nn.BatchNorm2d(c)
        self.b2 = QuantConv2d(c, c, 3, padding=1, bias=False, input_quantizer="ste_sign",
                              weight_quantizer="ste_sign")
        self.bn2 = nn.BatchNorm2d(c)
        self.b3a = QuantConv2d(c, c, 3, padding=1, bias=False, input_quantizer="ste_sign",
                               weight_quantizer="ste_sign")
        self.b3b = QuantConv2d(c, c, 1, bias=False, input_quantizer="ste_sign",
                               weight_quantizer="ste_sign")
        self.down = QuantConv2d(2 * c, 2 * c, 3, stride=2, padding=1, bias=False,
                                input_quantizer="ste_sign", weight_quantizer="ste_sign")
        self.bnd = nn.BatchNorm2d(2 * c)
        self.pool = nn.AvgPool2d(2)
        self.short = nn.Conv2d(2 * c, 2 * c, 1, bias=False)
        self.bns = nn.BatchNorm2d(2 * c)
        self.fc = nn.Linear(2 * c, 10)

    def forward(self, x):
        x = self.bn0(self.stem(x))
        x = self.bn1(self.b1(x)) + x
        y = self.bn2(self.b2(x))                       # read only by two sign layers: folded
        x = torch.cat([self.b3a(y), self.b3b(y)], 1) + torch.cat([x, x], 1)
        x = self.bnd(self.down(x)) + self.bns(self.short(self.pool(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(x), 1), 1))


class RGBNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.c2 = QuantConv2d(16, 32, 3, padding=1, bias=False, input_quantizer="xnor_sign",
                              weight_quantizer="bwn")
        self.bn2 = nn.BatchNorm2d(32)
        self.c3 = QuantConv2d(32, 32, 3, stride=2, padding=1, bias=False,
                              input_quantizer="ste_sign", weight_quantizer="ternary")
        self.up = nn.Upsample(scale_factor=2)
        self.fc = QuantLinear(32 * 8 * 8, 10, input_quantizer="ste_sign")

    def forward(self, x):
        x = F.max_pool2d(self.bn1(self.c1(x)), 2)              # 16x16
        x = self.bn2(self.c2(x))
        x = F.avg_pool2d(self.c3(x), 2)                        # 4x4
        return self.fc(torch.flatten(self.up(x), 1))


def _float_bn_net():
    return nn.Sequential(nn.Conv2d(1, 8, 5), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, stride=2), nn.BatchNorm2d(16), nn.Hardtanh(),
                         nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Linear(32, 10))


def _fmnist(n, channels=1, size=28):
    rng = np.random.default_rng(5)
    try:
        from lowbit.data import load
        imgs = load("test")[0][:n]
    except Exception:
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    if channels == 1:
        return imgs[:, None]
    pad = (size - 28) // 2
    imgs = np.pad(imgs, ((0, 0), (pad, pad), (pad, pad)))
    tint = rng.uniform(0.3, 1.0, (n, channels, 1, 1))
    return (imgs[:, None] * tint).astype(np.uint8)


NORM1 = {"mean": 0.2860406, "std": 0.3530242, "scale": 255.0}
NORM3 = {"mean": [0.2, 0.15, 0.1], "std": [0.3, 0.25, 0.2], "scale": 255.0}


@pytest.mark.parametrize("make,norm,channels,size", [
    (ResidualBinary, NORM1, 1, 28), (RGBNet, NORM3, 3, 32), (_float_bn_net, NORM1, 1, 28)],
    ids=["residual-binary", "rgb-3x32x32", "float-bn"])
def test_test_only_models_give_torch_predictions(make, norm, channels, size, tmp_path):
    torch.manual_seed(0)
    model = make()
    randomize_bn(model)
    model.eval()
    images = _fmnist(2000, channels, size)    # all 10k: benchmarks/exactness.py, docs/results.md
    path = tmp_path / "m.lbm"
    export_model(model, path, norm, input_shape=(channels, size, size))
    mean = np.asarray(norm["mean"], np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(norm["std"], np.float64).reshape(1, -1, 1, 1)
    x = ((images / 255.0 - mean) / std).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    acc = torch_accumulators(model, torch.from_numpy(x[:500]))
    for threads in (1, 2):
        rt = Runtime(path, threads=threads)
        n = len(images) if threads == 1 else 500
        np.testing.assert_array_equal(rt.predict(images[:n]), ref[:n].argmax(1))
        rec: dict = {}
        out = rt.logits(images[:500], record=rec)
        _close(out, ref[:500])
        for name, a in rec.items():
            np.testing.assert_array_equal(a, acc[name].astype(np.int64), err_msg=name)
    if make is ResidualBinary:
        ops = {op.get("name"): op for op in rt.ops}
        assert ops["b2"]["out"] == "bits" and "bn2" not in ops       # folded inside a branch
        assert ops["b1"]["out"] == "float"                           # BN read by an add
        assert {"b1", "b2", "b3a", "b3b", "down"} <= set(rec)
        assert sum(op["op"] == "add" for op in rt.ops) == 3


def test_v1_files_still_run():
    exp = np.load(FIXTURES / "v1-expected.npz")
    for name in ("bnn-lenet5", "xnor-lenet5"):
        rt = Runtime(FIXTURES / f"v1-{name}.lbm")
        assert rt.mf.graph["version"] == 1
        out = rt.logits(exp[name + "_images"])
        _close(out, exp[name])
        np.testing.assert_array_equal(out.argmax(1), exp[name].argmax(1))


def test_unsupported_module_names_the_node():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU())
    with pytest.raises(ExportError, match=r"export: module '1' \(GELU\) has no lowbit graph op; supported modules:.*Conv2d"):
        build_graph(model, None, (1, 8, 8))


def test_unsupported_function_names_the_node():
    model = Lambda(lambda s, x: torch.sigmoid(x))
    with pytest.raises(ExportError, match=r"node 'sigmoid'.*functions:"):
        build_graph(model, None, (1, 8, 8))


def test_data_dependent_control_flow_is_refused():
    def fn(s, x):
        if x.sum() > 0:
            return x
        return -x
    with pytest.raises(ExportError, match=r"cannot be traced by torch.fx at .*test_dag.py.*"
                                          r"Data-dependent control flow"):
        build_graph(Lambda(fn), None, (1, 8, 8))


def test_wrong_input_size_is_explained():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 3))
    with pytest.raises(ExportError, match=r"input of shape \(1, 8, 8\) failed.*--input-size"):
        build_graph(model, None, (1, 8, 8))


def test_graph_written_is_valid_v2(tmp_path):
    export_model(ResidualBinary().eval(), tmp_path / "r.lbm", NORM1, input_shape=(1, 28, 28))
    mf = codec.load(tmp_path / "r.lbm")
    assert mf.graph["version"] == 2
    codec.graph.parse(mf.graph, "r", mf.entries)
    used = {op[k] for op in mf.graph["ops"] for k in codec.graph.OPS[op["op"]][3] if op.get(k)}
    assert used == set(mf.entries)                   # no orphan tensors (folded BN dropped)
