"""Low-rank approximation: SVD / Tucker-2 / spatial factorisations (exact at full rank,
Eckart-Young error when truncated), rank choice, decomposed models exported and run in the
runtime == torch, the lowbit lowrank command and compress --low-rank."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from lowbit.data import Normalization
from lowbit.runtime.graph import Runtime
from lowbit.train import lowrank as LR
from lowbit.train.checkpoint import build_model, save_checkpoint
from lowbit.train.export import export_model

torch.set_num_threads(1)
NORM = {"mean": 0.2860406, "std": 0.3530242, "scale": 255.0}


def test_svd_linear_exact_at_full_rank_and_eckart_young():
    torch.manual_seed(0)
    lin = nn.Linear(40, 24)
    full = LR.svd_linear(lin, 24)
    x = torch.randn(5, 40)
    assert (full(x) - lin(x)).abs().max() < 1e-5
    s = torch.linalg.svdvals(lin.weight.detach().double())
    for r in (1, 5, 12):
        seq = LR.svd_linear(lin, r)
        assert seq.v.weight.shape == (r, 40) and seq.u.weight.shape == (24, r)
        assert torch.equal(seq.u.bias, lin.bias) and seq.v.bias is None
        err = (LR.reconstruct(seq) - lin.weight.detach().double()).norm()
        assert abs(float(err) - float(s[r:].square().sum().sqrt())) < 1e-5   # optimal


@pytest.mark.parametrize("stride,padding", [((1, 1), (0, 0)), ((2, 1), (1, 2))])
def test_conv_factorisations_exact_at_full_rank(stride, padding):
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 8, (3, 5), stride=stride, padding=padding)
    x = torch.randn(2, 6, 11, 13)
    for seq in (LR.tucker2_conv(conv, 6, 8), LR.spatial_conv(conv, 10 ** 6)):
        assert (seq(x) - conv(x)).abs().max() < 1e-5
        assert (LR.reconstruct(seq) - conv.weight.detach().double()).abs().max() < 1e-6
    t = LR.tucker2_conv(conv, 3, 4)
    assert [m.weight.shape for m in t] == [(3, 6, 1, 1), (4, 3, 3, 5), (8, 4, 1, 1)]
    sp = LR.spatial_conv(conv, 7)
    assert [m.weight.shape for m in sp] == [(7, 6, 3, 1), (8, 7, 1, 5)]


def test_rank_choice():
    s = np.array([4.0, 2.0, 1.0, 1.0])                 # squares 16 4 1 1 / 22
    assert LR.energy_rank(s, 0.5) == 1 and LR.energy_rank(s, 16 / 22) == 1
    assert LR.energy_rank(s, 0.8) == 2 and LR.energy_rank(s, 21 / 22) == 3
    assert LR.energy_rank(s, 1.0) == 4
    assert LR.ratio_rank_linear(300, 784, 4) == 54      # 54 * 1084 <= 58800 < 55 * 1084
    lin = nn.Linear(784, 300)
    p = LR._linear_plan(lin, LR.parse_spec("ratio=4"))
    assert p["rank"] == 54 and p["weights"] / p["factor_weights"] >= 4
    conv = nn.Conv2d(20, 50, 5)
    t = LR._conv_plan(conv, LR.parse_spec("ratio=3"))
    assert t["weights"] / t["factor_weights"] >= 3
    ri, ro = t["rank"]
    bigger = LR._tucker_params(20, 50, 25, max(1, min(20, round((ro + 1) * 20 / 50))), ro + 1)
    assert bigger > t["weights"] / 3                   # the largest rank that fits
    assert LR._conv_plan(conv, LR.parse_spec("rank=7,conv=spatial"))["rank"] == 7


def test_spec_parsing_and_errors():
    s = LR.parse_spec("ratio=4,conv=spatial,layers=fc1+conv2")
    assert (s.mode, s.value, s.conv, s.layers) == ("ratio", 4.0, "spatial", ["fc1", "conv2"])
    assert str(LR.parse_spec("energy=0.9")) == "energy=0.9,conv=tucker"
    for bad in ("energy=1.5", "ratio=1", "rank=0", "rank=2.5", "conv=cp", "foo=1", "0.9", "",
                "energy=0.9,ratio=2"):
        with pytest.raises(ValueError, match="--low-rank"):
            LR.parse_spec(bad)


def test_default_layers_and_expand_spec():
    torch.manual_seed(0)
    model = build_model("lenet5")
    plans = LR.decompose(model, "ratio=2")
    assert set(plans) == {"conv2", "fc1"}              # not conv1 (1 input channel), not fc2
    assert plans["fc1"]["factors"] == ["fc1.v", "fc1.u"]
    assert plans["conv2"]["factors"] == ["conv2.first", "conv2.core", "conv2.last"]
    assert LR.expand_layer_spec("conv1=0,fc1=0.5,fc2=0.3,conv=0.2", plans) == \
        "conv1=0,fc1.v=0.5,fc1.u=0.5,fc2=0.3,conv=0.2"
    with pytest.raises(ValueError, match="not float conv"):
        LR.decompose(build_model("lenet5"), "ratio=2,layers=nope")


@pytest.mark.parametrize("name,spec", [("lenet300", "ratio=3"), ("lenet5", "ratio=3"),
                                       ("lenet5", "energy=0.5,conv=spatial"),
                                       ("lenet5", "rank=4,layers=conv1+conv2+fc1+fc2")])
def test_decomposed_model_runs_in_the_runtime(name, spec, tmp_path):
    torch.manual_seed(0)
    model = build_model(name).eval()
    before = sum(p.numel() for p in model.parameters())
    plans = LR.decompose(model, spec)
    assert any(p["kind"] != "kept" for p in plans.values())
    assert sum(p.numel() for p in model.parameters()) < before
    path = tmp_path / "lr.lbm"
    export_model(model, path, NORM)
    imgs = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    x = torch.from_numpy(Normalization.from_dict(NORM).apply(imgs))
    with torch.no_grad():
        ref = model(x).numpy()
    for executor in ("python", None):
        rt = Runtime(path, executor=executor)
        assert {op["op"] for op in rt.ops} <= {"conv2d", "dense", "maxpool2d", "flatten", "relu"}
        out = rt.logits(imgs)
        np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))
        assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory):
    from lowbit.data import load
    images = load("train")[0][:2000]
    torch.manual_seed(0)
    model = build_model("lenet300")
    d = tmp_path_factory.mktemp("lr")
    save_checkpoint(d / "c.pt", model, normalization=Normalization.from_images(images),
                    with_rng=False, config={"val_size": 5000, "seed": 0})
    model.lowbit_input_shape = (1, 28, 28)
    return d / "c.pt"


def test_lowrank_command(float_ckpt, tmp_path, capsys):
    from lowbit.cli import main
    out, rep = tmp_path / "l.lbm", tmp_path / "l.json"
    r = LR.run(str(float_ckpt), str(out), "ratio=4", epochs=1, max_train=256, max_test=200,
               json_path=str(rep), progress=False)
    assert out.exists() and json.loads(rep.read_text())["param_ratio"] == r["param_ratio"]
    assert r["layers"]["fc1"]["rank"] == 54 and 3.5 < r["ratio"] < 4
    assert r["params_low_rank"] == 54 * 1084 + 300 + 18 * 400 + 100 + 1010
    assert main(["lowrank", str(float_ckpt), "-o", str(out), "--rank", "rank=0"]) == 2
    assert "rank: expected a positive integer" in capsys.readouterr().err


def test_compress_low_rank_then_prune(float_ckpt, tmp_path):
    from lowbit.runtime.evaluate import file_accuracy
    from lowbit.train.compress import Options, run
    out = tmp_path / "c.lbm"
    rep = run(str(float_ckpt), str(out), Options(
        low_rank="ratio=2", low_rank_epochs=1, prune="fc1=0.5,fc2=0.5,fc3=0", bits="5",
        index_bits="5", prune_epochs=1, share_epochs=0, max_train=256, max_test=200,
        progress=False, huffman=True), file_accuracy=file_accuracy)
    lr = rep["low_rank"]
    assert set(lr["layers"]) == {"fc1", "fc2"} and lr["params"] < 266610 / 1.9
    assert rep["targets"] == {"fc1.v": "0.5", "fc1.u": "0.5", "fc2.v": "0.5", "fc2.u": "0.5",
                              "fc3": "0"}
    assert rep["fp32_bytes"] == 4 * 266610 and rep["file_bytes"] == out.stat().st_size
    assert rep["ratio_pqh"] > 2 * 4                     # low-rank x pruning x 5-bit sharing
    assert rep["acc_compressed_from"] == "file"
