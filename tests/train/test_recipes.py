"""Low-bit recipes: build, train a step, deterministic eval, checkpoint round trip, learning."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.train import quantizers as Q
from lowbit.train import registry
from lowbit.train.checkpoint import build_model, load_model, save_checkpoint
from lowbit.train.layers import QuantLinear, quant_layers
from lowbit.train.recipes import parse_bits

RECIPES = [("bnn-mlp", {"hidden": 64}), ("bnn-mlp", {"hidden": 32, "first_layer": "bitplane"}),
           ("bnn-lenet5", {}), ("bnn-lenet5", {"first_layer": "bitplane",
                                                 "activation": "stochastic_sign"}),
           ("xnor-lenet5", {}), ("xnor-lenet5", {"order": "CBAP"}), ("bwn-lenet5", {}),
           ("twn-lenet5", {}), ("twn-lenet5", {"levels": 5, "per_channel": True}),
           ("dorefa-lenet5", {}), ("dorefa-lenet5", {"bits": "2,2,32"}),
           ("dorefa-lenet5", {"bits": "4,4,32"}), ("bnn-vgg-small", {"width": 0.25})]


def test_every_recipe_is_registered_with_defaults():
    for name in ("bnn-mlp", "bnn-lenet5", "xnor-lenet5", "bwn-lenet5", "twn-lenet5",
                 "dorefa-lenet5", "bnn-vgg-small"):
        r = registry.get(name)
        assert {"epochs", "lr", "optimizer", "schedule"} <= set(r.defaults) and r.doc
        assert r.defaults["epochs"] <= 30


@pytest.mark.parametrize("name,kwargs", RECIPES)
def test_recipe_trains_evals_deterministically_and_reloads(name, kwargs, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        for m in model.modules():
            if hasattr(m, "post_step"):
                m.post_step()
    for _, layer in quant_layers(model):
        if layer.weight_clip is not None:
            assert layer.weight.abs().max() <= layer.weight_clip
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (8, 10) and torch.equal(out, model(x))
    path = save_checkpoint(tmp_path / "ck.pt", model, epoch=1)
    again, meta = load_model(path)
    assert meta["model"] == {"name": name, "kwargs": kwargs}
    with torch.no_grad():
        assert torch.equal(again(x), out)


def test_first_and_last_layers_float_weights():
    for name, kwargs in RECIPES:
        layers = quant_layers(registry.build(name, **kwargs))
        first, last = layers[0][1], layers[-1][1]
        assert last.weight_bits == 32
        assert first.weight_bits == (1 if kwargs.get("first_layer") == "bitplane" else 32)
        assert all(l.weight_bits < 32 for _, l in layers[1:-1])


def test_dorefa_bits_parsing():
    assert parse_bits("1,2,6") == parse_bits("1-2-6") == parse_bits((1, 2, 6)) == (1, 2, 6)
    m = registry.build("dorefa-lenet5", bits="2,4,8")
    assert (m.conv2.weight_bits, m.conv2.input_bits, m.grad2.bits) == (2, 4, 8)
    for bad in ("1,2", "0,2,6", "a,b,c"):
        with pytest.raises(ValueError, match="bits"):
            parse_bits(bad)


def test_tiny_binary_model_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g)
    w_true = torch.randn(16, generator=g)
    y = (x @ w_true > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(QuantLinear(16, 64, bias=False), nn.BatchNorm1d(64),
                          QuantLinear(64, 64, bias=False, input_quantizer="ste_sign",
                                      weight_quantizer="ste_sign"), nn.BatchNorm1d(64),
                          QuantLinear(64, 2, bias=False, input_quantizer="ste_sign"),
                          nn.BatchNorm1d(2))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for step in range(100):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model[2].post_step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.93
    assert set(Q.SteSign()(model[2].weight).unique().tolist()) == {-1.0, 1.0}


def test_shift_adamax_and_exp_schedule():
    from lowbit.train.optimizers import lr_at, make_optimizer, make_schedule
    from lowbit.train.shift import ap2
    z = torch.tensor([3.0, -0.3, 0.0, 1e-3, 5.9])
    assert ap2(z).tolist() == [4.0, -0.25, 0.0, 2.0 ** -10, 8.0]   # round(log2 5.9) = 3
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = make_optimizer([w], {"optimizer": "shift_adamax", "lr": 0.1})
    for _ in range(50):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert w.abs().max() < 0.5                        # it descends
    sched = make_schedule({"schedule": "exp", "lr": 1e-2, "epochs": 4, "lr_decay": 0.01}, 10)
    assert lr_at(sched, 0) == 1e-2 and lr_at(sched, 40) == pytest.approx(1e-4)
    assert lr_at(sched, 20) == pytest.approx(1e-3)
