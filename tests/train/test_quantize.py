"""lowbit.train.quantize (one-call converter) and latent-weight clipping in users' own loops."""
from __future__ import annotations

import copy
import operator
import subprocess
import sys
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import lowbit.train as lt
from lowbit.train import quantizers as Q
from lowbit.train import recipes
from lowbit.train.convert import QuantizeWarning, quantize, quantize_report
from lowbit.train.layers import QuantConv2d, QuantLinear, QuantMixin

SCHEMES = ["bnn", "xnor", "bwn", "twn", "dorefa:1,2,6", "dorefa:2,4,32"]


def lenet() -> nn.Sequential:
    """Float LeNet-5 with the recipes' layer names (conv1, conv2, fc1, fc2)."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 20, 5, bias=False)), ("bn1", nn.BatchNorm2d(20)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(20, 50, 5, bias=False)), ("bn2", nn.BatchNorm2d(50)),
        ("pool2", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(800, 500, bias=False)), ("bn3", nn.BatchNorm1d(500)),
        ("relu", nn.ReLU()), ("fc2", nn.Linear(500, 10))]))


class Residual(nn.Module):
    """stem conv + BN, a residual block ``x + bn(conv(x))``, pooling, linear head."""

    def __init__(self, c: int = 8, classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.conv_b = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.bn0(self.stem(x))
        x = x + self.bn(self.conv(x))
        x = F.relu(self.conv_b(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _quantizers(layer):
    iq, wq, gq = layer.input_quantizer, layer.weight_quantizer, layer.grad_quantizer
    return (type(iq), getattr(iq, "bits", 32), type(wq), wq.bits, layer.weight_clip,
            layer.pad_value if isinstance(layer, QuantConv2d) else None,
            getattr(wq, "per_channel", None), type(gq), getattr(gq, "bits", 32))


RECIPE_OF = {"bnn": recipes.bnn_lenet5, "xnor": lambda: recipes.xnor_lenet5(order="CBAP"),
             "bwn": recipes.bwn_lenet5, "twn": recipes.twn_lenet5,
             "dorefa:1,2,6": lambda: recipes.dorefa_lenet5("1,2,6"),
             "dorefa:2,4,32": lambda: recipes.dorefa_lenet5("2,4,32")}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_swaps_hidden_layers_with_the_recipes_quantizers(scheme):
    model = lenet()
    q = quantize(model, scheme)
    assert type(q.conv1) is nn.Conv2d and type(q.fc2) is nn.Linear        # first / last float
    assert type(q.conv2) is QuantConv2d and type(q.fc1) is QuantLinear
    for name in ("bn1", "pool1", "bn2", "pool2", "flatten", "bn3", "relu"):
        assert type(getattr(q, name)) is type(getattr(model, name))       # the rest unchanged
    ref = RECIPE_OF[scheme]()
    for name in ("conv2", "fc1"):
        mine, theirs = _quantizers(getattr(q, name)), _quantizers(getattr(ref, name))
        if scheme.startswith("dorefa") and scheme.endswith(",32"):
            mine, theirs = mine[:-2], theirs[:-2]  # the recipe keeps an identity DorefaGrad(32)
        elif scheme.startswith("dorefa"):          # the recipe's grad module sits beside the layer
            theirs = theirs[:-2] + (Q.DorefaGrad, ref.grad2.bits)
        assert mine == theirs, name
    report = quantize_report(q)
    assert report["conv1"]["reason"] == "first" and report["fc2"]["reason"] == "last"
    assert q.lowbit_quantized["scheme"] == scheme and q.lowbit_quantized["quantized"] == [
        "conv2", "fc1"]


def test_scheme_details():
    m = quantize(lenet(), "bnn")
    assert m.conv2.weight_clip == 1.0 and m.conv2.pad_value == -1.0
    assert m.conv2.weight_quantizer is not m.fc1.weight_quantizer          # one per layer
    m = quantize(lenet(), "dorefa:2,3,8")
    assert (m.conv2.weight_bits, m.conv2.input_bits, m.conv2.grad_quantizer.bits) == (2, 3, 8)
    info = quantize_report(m)["fc1"]
    assert info == {"type": "QuantLinear", "input": "dorefa_act", "input_bits": 3,
                    "weight": "dorefa_weight", "weight_bits": 2, "grad_bits": 8}
    assert quantize(lenet(), " DoReFa:1-2-32 ").lowbit_quantized["scheme"] == "dorefa:1,2,32"
    assert quantize(lenet(), "dorefa:1,2,32").conv2.grad_quantizer is None


def test_weights_are_copied_exactly_and_float_layers_unchanged():
    model = Residual().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    model.conv_b.bias.requires_grad_(False)
    q = quantize(model, "xnor", keep_last=False).eval()
    assert isinstance(q.conv, QuantConv2d) and isinstance(q.fc, QuantLinear)
    assert type(q.stem) is nn.Conv2d
    for name in ("conv", "conv_b", "fc"):
        old, new = getattr(model, name), getattr(q, name)
        assert torch.equal(new.weight, old.weight) and new.weight.dtype == old.weight.dtype
        assert (new.bias is None) == (old.bias is None)
        if old.bias is not None:
            assert torch.equal(new.bias, old.bias)
        if isinstance(old, nn.Conv2d):
            assert (new.kernel_size, new.stride, new.padding) == (old.kernel_size, old.stride,
                                                                  old.padding)
        assert new.training is False
    assert q.conv_b.bias.requires_grad is False and q.conv_b.weight.requires_grad is True
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(q.stem(x), model.stem(x))                # kept float layer: same output
    assert type(model.conv) is nn.Conv2d                        # the original is untouched


def test_keep_first_last_and_skip():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8),
                        nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), nn.Linear(8, 3))
    kinds = lambda m: [type(v).__name__ for k, v in m.named_modules()
                       if isinstance(v, (nn.Linear,))]
    assert kinds(quantize(mlp, "bnn")) == ["Linear"] + ["QuantLinear"] * 3 + ["Linear"]
    assert kinds(quantize(mlp, "bnn", keep_first=False)) == ["QuantLinear"] * 4 + ["Linear"]
    assert kinds(quantize(mlp, "bnn", keep_first=False, keep_last=False)) == ["QuantLinear"] * 5
    assert kinds(quantize(mlp, "bnn", skip=["3"])) == ["Linear"] * 2 + ["QuantLinear"] * 2 \
        + ["Linear"]
    q = quantize(mlp, "bnn", skip=("4",), keep_first=False)     # a container covers its children
    assert kinds(q) == ["QuantLinear"] * 2 + ["Linear"] * 3
    assert quantize_report(q)["4.1"]["reason"] == "skip"
    assert kinds(quantize(mlp, "bnn", skip="4.0")) == ["Linear", "QuantLinear", "Linear",
                                                       "QuantLinear", "Linear"]
    with pytest.raises(ValueError, match=r"skip: no module named 'fc9'"):
        quantize(mlp, "bnn", skip=["fc9"])
    assert kinds(quantize(quantize(mlp, "bnn"), "twn")) == kinds(quantize(mlp, "bnn"))


def test_registration_order_decides_first_and_last():
    class Reordered(nn.Module):      # registered head first, called last
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 2)
            self.body = nn.Linear(8, 8)
            self.stem = nn.Linear(4, 8)

        def forward(self, x):
            return self.head(self.body(self.stem(x)))

    report = quantize_report(quantize(Reordered(), "bwn"))
    assert report["head"]["reason"] == "first" and report["stem"]["reason"] == "last"
    assert report["body"]["type"] == "QuantLinear"


def test_inplace_and_root_layer():
    model = lenet()
    assert quantize(model, "bwn", inplace=True) is model and isinstance(model.conv2, QuantMixin)
    lin = nn.Linear(4, 3)
    assert type(quantize(lin, "bnn")) is nn.Linear                     # first == last
    q = quantize(lin, "bnn", keep_first=False, keep_last=False)
    assert type(q) is QuantLinear and torch.equal(q.weight, lin.weight)
    assert q.lowbit_quantized["quantized"] == [""]


def test_unsupported_convs_stay_float_with_one_warning():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 8, 3, dilation=2),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.Conv2d(8, 8, 3, padding="same"),
        nn.LazyConv2d(8, 1), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.warns(QuantizeWarning) as rec:
        q = quantize(model, "bnn")
    assert len(rec) == 1
    msg = str(rec[0].message)
    for text in ("1 (groups=2)", "2 (dilation=(2, 2))", "3 (padding_mode='reflect')",
                 "4 (padding='same')", "5 (subclass LazyConv2d"):
        assert text in msg
    assert [type(m).__name__ for m in q][:7] == ["Conv2d"] * 5 + ["LazyConv2d", "QuantConv2d"]
    assert quantize_report(q)["1"]["reason"] == "groups=2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # a plain model: no warning
        quantize(lenet(), "bnn")


@pytest.mark.parametrize("bad,match", [
    ("dorefa", r"'dorefa:W,A,G'"), ("dorefa:", r"'dorefa:W,A,G'"),
    ("dorefa:1,2", r"expected 'W,A,G'"), ("dorefa:1,2,6,8", r"expected 'W,A,G'"),
    ("dorefa:a,b,c", r"expected 'W,A,G'"), ("dorefa:0,2,6", r"W must be in 1\.\.32"),
    ("dorefa:1,33,6", r"A must be in 1\.\.32"), ("dorefa:1,2,0", r"G must be in 1\.\.32"),
    ("xnor-net", r"unknown; expected one of bnn, xnor, bwn, twn, dorefa:W,A,G"),
])
def test_scheme_errors_are_clear(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        quantize(lenet(), bad)
    assert repr(bad) in str(e.value)


def test_scheme_must_be_a_string_and_model_a_module():
    with pytest.raises(TypeError, match="scheme: expected a string"):
        quantize(lenet(), None)
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        quantize("lenet5", "bnn")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_converted_models_trace_with_fx(scheme):
    torch.manual_seed(1)
    q = quantize(Residual(), scheme, keep_first=False)
    x = torch.randn(4, 3, 8, 8)
    gm = fx.symbolic_trace(q)
    for mode in (False, True):
        q.train(mode)
        gm.train(mode)
        torch.manual_seed(2)
        want = q(x)
        torch.manual_seed(2)
        assert torch.equal(gm(x), want)
    assert any(n.op == "call_function" and n.target is operator.add for n in gm.graph.nodes)



@pytest.mark.parametrize("scheme", ["bnn", "xnor", "bwn", "twn", "dorefa:1,2,6"])
def test_residual_model_with_batchnorm_trains(scheme):
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,))
    model = quantize(Residual(16), scheme)
    opt = lt.ClipOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2), model)
    model.train()
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    if scheme == "bnn":
        assert model.conv.weight.abs().max().item() <= 1.0


# -- latent-weight clipping in a user's own loop -------------------------------------------------

def _bnn_mlp():
    torch.manual_seed(0)
    return quantize(nn.Sequential(nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 2)), "bnn")


def _push(model, opt, steps=1):
    x = torch.randn(32, 6)
    for _ in range(steps):
        opt.zero_grad()
        (model(x) * torch.linspace(-1, 1, 2)).sum().backward()
        opt.step()
    return model[1].weight.detach()


def test_plain_optimizer_does_not_clip():
    model = _bnn_mlp()
    w = _push(model, torch.optim.SGD(model.parameters(), lr=100.0))
    assert w.abs().max().item() > 1.0


def test_clip_optimizer_clips_and_delegates():
    model = _bnn_mlp()
    inner = torch.optim.SGD(model.parameters(), lr=100.0, momentum=0.9)
    opt = lt.ClipOptimizer(inner, model)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.defaults is inner.defaults
    w = _push(model, opt, steps=2)
    assert w.abs().max().item() == 1.0 and (w.abs() == 1.0).sum().item() > 0
    assert opt.state is inner.state and len(opt.state) > 0
    sd = opt.state_dict()
    assert sd["param_groups"] == inner.state_dict()["param_groups"]
    fresh = lt.ClipOptimizer(torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9), model)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == 100.0 and len(fresh.optimizer.state) == len(inner.state)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)   # schedulers accept it
    _push(model, opt)
    sched.step()
    assert inner.param_groups[0]["lr"] == 50.0
    assert "SGD" in repr(opt) and copy.deepcopy(opt).optimizer is not inner


def test_clip_optimizer_passes_the_closure():
    model = _bnn_mlp()
    opt = lt.ClipOptimizer(torch.optim.LBFGS(model.parameters(), lr=50.0, max_iter=3), model)
    x = torch.randn(8, 6)

    def closure():
        opt.zero_grad()
        loss = model(x).sum()
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))
    assert model[1].weight.abs().max().item() <= 1.0


def test_clip_after_step_hook_clips_until_removed():
    model = _bnn_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=100.0)
    handle = lt.clip_after_step(opt, model)
    w = _push(model, opt)
    assert w.abs().max().item() == 1.0 and (w.abs() == 1.0).sum().item() > 0
    handle.remove()
    assert _push(model, opt).abs().max().item() > 1.0


def test_quantize_prints_nothing(capsys):
    quantize(Residual(), "bnn")
    quantize_report(quantize(lenet(), "dorefa:1,2,6"))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_package_api_is_lazy():
    code = ("import sys, lowbit.train as t; assert 'torch' not in sys.modules; "
            "assert not any(k.startswith('lowbit.runtime') for k in sys.modules); "
            "assert callable(t.quantize) and t.QuantConv2d.__name__ == 'QuantConv2d'; "
            "assert set(t.__all__) >= {'QuantConv2d', 'QuantLinear', 'quantize', "
            "'quantize_report', 'ClipOptimizer', 'clip_after_step', 'fit', 'evaluate', "
            "'export_model'}; import lowbit.train.convert; assert callable(t.quantize)")
    subprocess.run([sys.executable, "-c", code], check=True)
