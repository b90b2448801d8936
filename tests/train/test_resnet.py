"""Bi-Real-Net-style binary ResNets: shapes, shortcut structure (fx), traceability, learning."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.train import registry
from lowbit.train.checkpoint import build_model
from lowbit.train.layers import QuantConv2d
from lowbit.train.resnet import LeafTracer, parse_blocks, trace

ALLOWED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, nn.AvgPool2d,
           nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.ReLU, nn.Hardtanh, nn.PReLU, nn.Flatten)


def _binary_convs(model):
    return [m for m in model.modules() if isinstance(m, QuantConv2d)]


def _adds(gm):
    import operator
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in
            (operator.add, torch.add)] + \
           [n for n in gm.graph.nodes if n.op == "call_method" and n.target in ("add", "add_")]


def test_registered_with_defaults():
    for name in ("bireal-resnet", "bireal-plain"):
        r = registry.get(name)
        assert {"epochs", "lr", "optimizer", "schedule", "batch_size", "weight_decay"} <= \
            set(r.defaults) and r.doc
        assert r.defaults["epochs"] <= 30 and r.defaults["weight_decay"] == 0.0


@pytest.mark.parametrize("kwargs,shape", [
    ({"width": 16}, (2, 1, 28, 28)),
    ({"width": 16, "in_channels": 3}, (2, 3, 32, 32)),
    ({"width": 8, "in_channels": 3, "blocks": "1,1,1,1", "num_classes": 100}, (2, 3, 32, 32)),
    ({"width": 8, "blocks": 1, "head": "none"}, (3, 1, 28, 28)),
    ({"width": 8, "act": "prelu"}, (2, 1, 28, 28)),
])
def test_builds_and_output_shape(kwargs, shape):
    torch.manual_seed(0)
    model = build_model("bireal-resnet", **kwargs)
    out = model(torch.randn(*shape))
    assert out.shape == (shape[0], kwargs.get("num_classes", 10))
    model.eval()
    assert torch.isfinite(model(torch.randn(*shape))).all()


def test_only_exportable_module_types_and_binary_convs():
    model = build_model("bireal-resnet", width=16, blocks="2,2,2", act="prelu")
    leaves = []

    def walk(m, name):  # a QuantConv2d is one op (its quantizers are its own children)
        if isinstance(m, QuantConv2d) or not list(m.children()):
            leaves.append((name, m))
        else:
            for n, c in m.named_children():
                walk(c, f"{name}.{n}" if name else n)
    walk(model, "")
    for name, m in leaves:
        assert isinstance(m, ALLOWED), (name, type(m).__name__)
    convs = _binary_convs(model)
    assert len(convs) == 6
    for c in convs:
        assert c.kernel_size == (3, 3) and c.bias is None and c.pad_value == -1.0
        assert c.input_quantizer.name == "ste_sign" and c.weight_quantizer.name == "ste_sign"
        assert c.op_kind() == "binary" and c.weight_clip == 1.0
    assert [c.stride for c in convs] == [(1, 1), (1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert isinstance(model.conv0, nn.Conv2d) and not isinstance(model.conv0, QuantConv2d)
    assert type(model.fc) is nn.Linear


@pytest.mark.parametrize("blocks,act", [("2,2,2", "none"), ("1,3", "none"), (1, "none"),
                                        ("2,2,2", "prelu")])
def test_every_binary_conv_has_a_real_shortcut(blocks, act):
    """In the fx graph each binary conv feeds (through its BN) one add whose other operand is
    the block input or its pooled 1x1 projection: #adds == #binary convs."""
    model = build_model("bireal-resnet", width=8, blocks=blocks, act=act)
    gm = trace(model)
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == \
        (sum(parse_blocks(blocks)) if act == "prelu" else 0)
    convs = [n for n in gm.graph.nodes if n.op == "call_module"
             and isinstance(gm.get_submodule(n.target), QuantConv2d)]
    adds = _adds(gm)
    assert len(convs) == len(_binary_convs(model)) == sum(parse_blocks(blocks)) == len(adds)
    for conv in convs:
        (bn,) = conv.users
        assert isinstance(gm.get_submodule(bn.target), nn.BatchNorm2d)
        (add,) = bn.users
        assert add in adds
        other = [a for a in add.args if a is not bn][0]
        block_input = conv.args[0]
        if conv.target.endswith("b1.conv") and gm.get_submodule(conv.target).stride == (2, 2):
            # AvgPool2d(2) -> float 1x1 conv -> BN on the block input
            sc_bn = other
            sc_conv = sc_bn.args[0]
            pool = sc_conv.args[0]
            assert isinstance(gm.get_submodule(sc_bn.target), nn.BatchNorm2d)
            sc = gm.get_submodule(sc_conv.target)
            assert type(sc) is nn.Conv2d and sc.kernel_size == (1, 1)
            assert isinstance(gm.get_submodule(pool.target), nn.AvgPool2d)
            assert pool.args[0] is block_input
        else:
            assert other is block_input


def test_plain_twin_has_no_adds_and_same_binary_convs():
    for model in (build_model("bireal-plain", width=8),
                  build_model("bireal-resnet", width=8, shortcut=False)):
        gm = trace(model)
        assert _adds(gm) == []
        assert len(_binary_convs(model)) == 6
        assert not any(isinstance(m, nn.AvgPool2d) for m in model.modules())
        x = torch.randn(2, 1, 28, 28)
        model.eval()
        assert gm(x).shape == (2, 10)


def test_fx_trace_matches_eager_and_plain_symbolic_trace_of_the_blocks():
    torch.manual_seed(0)
    model = build_model("bireal-resnet", width=8, in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    gm = trace(model)
    torch.testing.assert_close(gm(x), model(x))
    # the leaf-only tracer is the only concession: with QuantConv2d as a leaf the stock
    # torch.fx.symbolic_trace machinery (Tracer.trace) handles the rest unmodified
    assert issubclass(LeafTracer, torch.fx.Tracer)
    ops = {type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes
           if n.op == "call_module"}
    assert ops <= {"Conv2d", "QuantConv2d", "BatchNorm2d", "AvgPool2d", "AdaptiveAvgPool2d",
                   "ReLU", "Flatten", "Linear"}


@pytest.mark.parametrize("name", ["bireal-resnet", "bireal-plain"])
def test_a_few_steps_lower_the_loss_and_clip_latent_weights(name):
    torch.manual_seed(0)
    model = build_model(name, width=8, blocks="1,1")
    # a learnable toy task: class k = a fixed random pattern k plus noise
    y = torch.arange(32) % 10
    x = torch.randn(10, 1, 28, 28)[y] + 0.5 * torch.randn(32, 1, 28, 28)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    post = [m for m in model.modules() if hasattr(m, "post_step")]
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for m in post:
            m.post_step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2 and losses[-1] < min(losses[:5])
    for c in _binary_convs(model):
        assert c.weight.abs().max() <= 1.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        parse_blocks("2,x")
    with pytest.raises(ValueError):
        parse_blocks("2,0")
    with pytest.raises(ValueError):
        build_model("bireal-resnet", head="gelu")
    with pytest.raises(ValueError):
        build_model("bireal-resnet", act="relu6")
    assert parse_blocks([1, 2]) == (1, 2) and parse_blocks(2) == (2, 2, 2)
