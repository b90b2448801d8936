"""Shift-based BatchNorm (BNN paper, Algorithm 3): AP2, the training forward, the inference
form (an ordinary BN with a power-of-two scale), the recipes' bn= switch, and export: the
runtime equals torch exactly, integer accumulators identical, ties included."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lowbit.data import Normalization
from lowbit.runtime.graph import Runtime
from lowbit.train.checkpoint import build_model
from lowbit.train.export import build_graph, export_model
from lowbit.train.sbn import (EXPORT_EPS, ShiftBatchNorm, ShiftBatchNorm1d, ShiftBatchNorm2d,
                              ap2, make_bn, make_output_bn)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from test_export import NORM, torch_accumulators  # noqa: E402

torch.set_num_threads(1)


def ap2_ref(x: float) -> float:
    """sign(x) * 2^round(log2|x|) in float64 (the paper's definition)."""
    return 0.0 if x == 0 else math.copysign(2.0 ** round(math.log2(abs(x))), x)


def test_ap2_is_the_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g) * torch.exp(torch.randn(20000, generator=g) * 4)
    x = torch.cat([x, torch.tensor([0.0, 1.0, -1.0, 0.75, -3.0, 1.4142135, 1.4142137, 1e-30])])
    got = ap2(x)
    want = torch.tensor([ap2_ref(float(v)) for v in x], dtype=torch.float64)
    assert torch.equal(got.double(), want)
    assert ap2(torch.tensor([1.4142135]))[0] == 1 and ap2(torch.tensor([1.4142137]))[0] == 2
    p = got[got != 0].abs()                      # exact powers of two
    assert torch.equal(torch.frexp(p)[0], torch.full_like(p, 0.5))


def _reference_train(x, gamma, beta, eps):
    """Algorithm 3 in float64 with the paper's AP2 (y = AP2(gamma) * x_hat + beta)."""
    dims = [0] + list(range(2, x.dim()))
    view = (1, -1) + (1,) * (x.dim() - 2)
    x = x.double()
    mu = x.mean(dims)
    c = x - mu.reshape(view)
    a = torch.tensor([ap2_ref(float(v)) for v in c.flatten()], dtype=torch.float64).reshape(c.shape)
    var = (c * a).mean(dims)
    inv = torch.tensor([ap2_ref(float(1 / math.sqrt(v + eps))) for v in var], dtype=torch.float64)
    g = torch.tensor([ap2_ref(float(v)) for v in gamma], dtype=torch.float64)
    return c * (inv * g).reshape(view) + beta.double().reshape(view), mu, var


@pytest.mark.parametrize("cls,shape", [(ShiftBatchNorm2d, (6, 5, 3, 4)),
                                       (ShiftBatchNorm1d, (16, 5))])
def test_training_forward_is_algorithm_3(cls, shape):
    torch.manual_seed(0)
    bn = cls(5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.3, -1.7, 2.2, 0.0, 0.9]))
        bn.bias.copy_(torch.randn(5))
    x = torch.randn(*shape) * 3 + 1
    y = bn(x)
    ref, mu, var = _reference_train(x, bn.weight.detach(), bn.bias.detach(), bn.eps)
    np.testing.assert_allclose(y.detach().double().numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    n = x.numel() // x.shape[1]
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mu.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var.numpy() * n / (n - 1),
                               rtol=1e-5)
    y.sum().backward()                         # straight-through: gradients reach gamma, beta
    assert bn.weight.grad is not None and torch.isfinite(bn.weight.grad).all()
    assert torch.equal(bn.bias.grad, torch.full((5,), float(n)))


def test_inference_is_a_power_of_two_batchnorm():
    torch.manual_seed(1)
    bn = ShiftBatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.3, -1.7, 0.0, 5.0]))
        bn.bias.copy_(torch.randn(4))
        bn.running_mean.copy_(torch.randn(4))
        bn.running_var.copy_(torch.rand(4) * 10 + 0.1)
    bn.eval()
    s = bn.inference_scale()
    want = [ap2_ref(float(g)) * ap2_ref(float(1 / math.sqrt(float(v) + bn.eps)))
            for g, v in zip(bn.weight.detach(), bn.running_var)]
    assert s.tolist() == want and s[2] == 0
    x = torch.randn(3, 4, 5, 5) * 4
    with torch.no_grad():
        y = bn(x)
    # an ordinary eval BatchNorm with weight s, var 1 - eps', eps': var + eps' == 1 exactly
    ref = F.batch_norm(x, bn.running_mean, torch.full((4,), 1 - EXPORT_EPS), s, bn.bias,
                       False, 0.0, EXPORT_EPS)
    assert torch.equal(y, ref)
    assert np.float32(1 - EXPORT_EPS) + np.float32(EXPORT_EPS) == np.float32(1)
    # the shift form: x * s is exact, so y = f32((x - mean) * s + beta) up to one rounding
    manual = ((x.double() - bn.running_mean.double().reshape(1, -1, 1, 1))
              * s.double().reshape(1, -1, 1, 1) + bn.bias.double().reshape(1, -1, 1, 1)).float()
    assert (y - manual).abs().max() <= 1e-6 * max(1.0, float(manual.abs().max()))


def test_recipes_bn_switch_and_defaults_unchanged():
    for name in ("bnn-mlp", "bnn-lenet5", "bnn-vgg-small", "bireal-resnet", "bireal-plain"):
        kw = dict(hidden=64) if name == "bnn-mlp" else dict(width=0.25) if "vgg" in name \
            else dict(width=8) if "bireal" in name else {}
        torch.manual_seed(0)
        plain = build_model(name, **kw)
        torch.manual_seed(0)
        batch = build_model(name, bn="batch", **kw)
        torch.manual_seed(0)
        shift = build_model(name, bn="shift", **kw)
        assert not any(isinstance(m, ShiftBatchNorm) for m in plain.modules())
        assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                     batch.state_dict().values()))
        bns = [m for m in plain.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        sbns = [m for m in shift.modules() if isinstance(m, ShiftBatchNorm)]
        assert len(bns) == len(sbns) > 0
        assert list(plain.state_dict()) == list(shift.state_dict())   # same keys
        shift.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="bn: expected"):
        make_bn("group")
    with pytest.raises(ValueError, match="shift-hidden"):
        make_output_bn("group")
    assert make_output_bn("shift") is ShiftBatchNorm1d
    assert make_output_bn("batch") is make_output_bn("shift-hidden") is nn.BatchNorm1d


def randomize_sbn(model, seed=1):
    """Random gamma (some negative, one zero), beta, running stats; in a third of the channels
    beta = 0 and an integer mean: with a power-of-two scale BN(acc) = 0 exactly at acc = mean
    (ties must give +1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, ShiftBatchNorm):
            c = m.num_features
            with torch.no_grad():
                gamma = torch.rand(c, generator=g) + 0.2
                gamma[torch.rand(c, generator=g) < 0.25] *= -1
                gamma[0] = 0.0
                m.weight.copy_(gamma)
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 20 + 0.5)
                mean = torch.randn(c, generator=g) * 3
                tie = torch.arange(c) % 3 == 1
                mean[tie] = torch.round(mean[tie])
                m.bias[tie] = 0.0
                m.running_mean.copy_(mean)


CASES = [("bnn-lenet5", {}, {"conv2", "fc1"}),
         ("bnn-lenet5", dict(first_layer="bitplane"), {"conv1", "conv2", "fc1"}),
         ("bnn-mlp", dict(hidden=96), {"fc2", "fc3"}),
         ("bnn-vgg-small", dict(width=0.25), {"conv2", "conv3", "conv4", "conv5", "conv6", "fc1"}),
         ("bireal-resnet", dict(width=8, blocks="1,1"), {"blocks.s1b1.conv", "blocks.s2b1.conv"})]


def check_exact(model, path, imgs, bitwise):
    """Python executor (the spec): logits within 1e-5 of torch, same argmax, every bitwise
    layer's integer accumulators identical to torch's; the default (native) executor: the
    same logits."""
    x = Normalization.from_dict(NORM).apply(imgs)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    rt = Runtime(path, executor="python")
    rec: dict = {}
    out = rt.logits(imgs, record=rec)
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    acc = torch_accumulators(model, torch.from_numpy(x))
    assert set(bitwise) <= set(rec)
    for name, a in rec.items():
        np.testing.assert_array_equal(a, acc[name].astype(np.int64), err_msg=name)
    native = Runtime(path).logits(imgs)
    assert np.abs(native - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    return rt


@pytest.mark.parametrize("name,kwargs,bitwise", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_export_folds_exactly(name, kwargs, bitwise, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, bn="shift", **kwargs)
    randomize_sbn(model)
    model.eval()
    path = tmp_path / "m.lbm"
    export_model(model, path, NORM)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8)
    imgs[0] = 0
    rt = check_exact(model, path, imgs, bitwise)
    ops = [op["op"] for op in rt.ops]
    if name.startswith("bnn"):                 # sign(SBN) folded: BN only after the first / last
        assert ops.count("batchnorm") == (1 if kwargs.get("first_layer") == "bitplane" else 2)
        assert all(op["out"] == "bits" for op in rt.ops
                   if op["op"] in ("qconv2d", "qdense") and op["name"] in bitwise)


def test_ties_hit_the_threshold_exactly():
    """Accumulators equal to an integer running mean with beta 0 give BN = 0 -> bit +1."""
    from lowbit.codec.fold import fold_bn_threshold
    bn = ShiftBatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.7, -0.7, 3.0]))
        bn.bias.zero_()
        bn.running_mean.copy_(torch.tensor([5.0, -3.0, 0.0]))
        bn.running_var.copy_(torch.tensor([4.0, 4.0, 1.0]))
    bn.eval()
    graph, tensors = build_graph(nn.Sequential(bn), None, (3,))
    op = graph["ops"][0]
    t = {k: tensors[op[k]].data for k in ("gamma", "beta", "mean", "var")}
    thr, flip = fold_bn_threshold(t["gamma"], t["beta"], t["mean"], t["var"], op["eps"], 20)
    acc = torch.arange(-20, 21, dtype=torch.float32)[:, None].repeat(1, 3)
    want = (bn(acc) >= 0).numpy()
    got = np.where(flip.astype(bool), acc.numpy() <= thr, acc.numpy() >= thr)
    np.testing.assert_array_equal(got, want)
    assert thr.tolist()[0] == 5 and thr.tolist()[1] == -3 and flip.tolist() == [0, 1, 0]


def test_tracers_see_the_same_inference():
    """torch.jit.trace (the ONNX baselines of lowbit bench model) gets AP2's scale as a
    constant computed in numpy: the same values as eager eval."""
    import warnings
    torch.manual_seed(0)
    model = build_model("bnn-lenet5", bn="shift")
    randomize_sbn(model)
    model.eval()
    for m in model.modules():
        if isinstance(m, ShiftBatchNorm):
            assert torch.equal(torch.from_numpy(m._inference_scale_np()), m.inference_scale())
    x = torch.randn(4, 1, 28, 28)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        assert torch.equal(traced(x), model(x))


HIDDEN = [("bnn-lenet5", {}, "bn4"), ("bnn-mlp", dict(hidden=64), "bn4"),
          ("bnn-vgg-small", dict(width=0.25), "bn8")]


@pytest.mark.parametrize("name,kwargs,out_bn", HIDDEN, ids=[h[0] for h in HIDDEN])
def test_shift_hidden_is_sbn_before_signs_and_bn_on_the_logits(name, kwargs, out_bn):
    """bn="shift-hidden": every BN that a sign follows (the next quantized layer's input
    quantizer) is a ShiftBatchNorm, the output BN on the logits an ordinary BatchNorm1d;
    the state-dict keys are those of bn="batch" / "shift"."""
    torch.manual_seed(0)
    model = build_model(name, bn="shift-hidden", **kwargs)
    names = list(model._modules)
    bns = [n for n, m in model.named_children() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns[-1] == out_bn == names[-1]
    out = getattr(model, out_bn)
    assert type(out) is nn.BatchNorm1d and out.num_features == 10
    for n in bns[:-1]:
        assert isinstance(getattr(model, n), ShiftBatchNorm), n
        nxt = next(getattr(model, k) for k in names[names.index(n) + 1:]
                   if hasattr(getattr(model, k), "input_quantizer"))
        assert nxt.input_quantizer is not None           # a sign follows
    shift = build_model(name, bn="shift", **kwargs)
    assert isinstance(getattr(shift, out_bn), ShiftBatchNorm)    # "shift" stays the paper's
    assert list(model.state_dict()) == list(shift.state_dict())
    model.load_state_dict(shift.state_dict())


def test_shift_hidden_without_an_output_bn_is_shift():
    """Bi-Real ends in a float linear (no output BN): "shift-hidden" builds the "shift" net."""
    torch.manual_seed(0)
    a = build_model("bireal-resnet", width=8, blocks="1,1", bn="shift-hidden")
    torch.manual_seed(0)
    b = build_model("bireal-resnet", width=8, blocks="1,1", bn="shift")
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def _train_briefly(model, steps=5, seed=0):
    """A few Adam steps on random images / labels in training mode (batch statistics)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        x = torch.randn(32, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


HIDDEN_EXPORT = [("bnn-lenet5", {}, {"conv2", "fc1"}),
                 ("bnn-lenet5", dict(first_layer="bitplane"), {"conv1", "conv2", "fc1"}),
                 ("bnn-mlp", dict(hidden=96), {"fc2", "fc3"})]


@pytest.mark.parametrize("name,kwargs,bitwise", HIDDEN_EXPORT,
                         ids=[f"{c[0]}-{c[1]}" for c in HIDDEN_EXPORT])
@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
def test_shift_hidden_export_is_exact(name, kwargs, bitwise, trained, tmp_path):
    """bn="shift-hidden" exports and runs like the others: runtime logits = torch's (1e-5),
    same argmax, identical integer accumulators; the hidden SBNs fold into thresholds and
    only the first float layer's BN and the output BN stay batchnorm ops."""
    torch.manual_seed(0)
    model = build_model(name, bn="shift-hidden", **kwargs)
    if trained:
        _train_briefly(model)
    else:
        randomize_sbn(model)
        g = torch.Generator().manual_seed(2)
        out = model.bn4
        with torch.no_grad():
            out.weight.copy_(torch.randn(10, generator=g))
            out.bias.copy_(torch.randn(10, generator=g))
            out.running_mean.copy_(torch.randn(10, generator=g) * 3)
            out.running_var.copy_(torch.rand(10, generator=g) * 20 + 0.5)
    model.eval()
    path = tmp_path / "m.lbm"
    export_model(model, path, NORM)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8)
    imgs[0] = 0
    rt = check_exact(model, path, imgs, bitwise)
    ops = [op["op"] for op in rt.ops]
    assert ops.count("batchnorm") == (1 if kwargs.get("first_layer") == "bitplane" else 2)
    assert all(op["out"] == "bits" for op in rt.ops
               if op["op"] in ("qconv2d", "qdense") and op["name"] in bitwise)
