"""Quantizers against direct numpy evaluations of the SPEC formulas (sections 1-4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.data import Normalization
from lowbit.train import quantizers as Q
from lowbit.train.ste import GradQuantize, quantize_k

SHAPES = [(7,), (5, 13), (4, 3, 5, 5), (16, 8, 3, 3)]


def rnd(shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def per(x, per_channel, fn):
    """Apply fn to each output channel (dim 0) or the whole array, broadcast back."""
    if not per_channel:
        return fn(x)
    return np.stack([fn(x[i]) for i in range(x.shape[0])])


# -- BNN sign ----------------------------------------------------------------------------------
def test_sign_of_zero_is_plus_one():
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 2.0, -2.0])
    for name in ("ste_sign", "stochastic_sign", "xnor_sign"):
        q = Q.get(name).eval()
        assert q(x).tolist() == [1, 1, 1, -1, 1, -1]


@pytest.mark.parametrize("shape", SHAPES)
def test_ste_sign_forward_and_gradient_mask(shape):
    x = rnd(shape, 1, 1.5)
    x.view(-1)[:4] = torch.tensor([1.0, -1.0, 0.0, 1.0000001])[: x.numel()]
    x.requires_grad_(True)
    q = Q.get("ste_sign")
    y = q(x)
    np.testing.assert_array_equal(y.detach().numpy(), np_sign(x.detach().numpy()))
    g = rnd(shape, 2)
    y.backward(g)
    mask = np.abs(x.detach().numpy()) <= 1.0
    np.testing.assert_array_equal(x.grad.numpy(), np.where(mask, g.numpy(), 0.0))


def test_ste_sign_clip_parameter():
    x = torch.tensor([-2.5, -2.0, 0.3, 2.0, 2.1], requires_grad=True)
    Q.SteSign(clip=2.0)(x).sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]


def test_stochastic_sign_probability_and_eval():
    q = Q.get("stochastic_sign")
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0]).repeat(20000, 1)
    torch.manual_seed(0)
    y = q.train()(x)
    assert set(y.unique().tolist()) <= {-1.0, 1.0}
    p_plus = (y > 0).double().mean(0).numpy()
    np.testing.assert_allclose(p_plus, np.clip((np.array([-2, -.5, 0, .5, 2]) + 1) / 2, 0, 1),
                               atol=0.015)
    q.eval()
    assert torch.equal(q(x), q(x)) and torch.equal(q(x[0]), torch.tensor([-1.0, -1, 1, 1, 1]))


# -- BWN / XNOR --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("per_channel", [True, False])
def test_bwn_forward_and_gradient(shape, per_channel):
    w = rnd(shape, 3, 0.8).requires_grad_(True)
    q = Q.BinaryWeight(per_channel=per_channel)
    y = q(w)
    wn = w.detach().numpy().astype(np.float64)
    alpha = per(wn, per_channel, lambda a: np.full_like(a, np.abs(a).sum() / a.size))
    np.testing.assert_allclose(y.detach().numpy(), alpha * np_sign(wn), rtol=1e-6)
    g = rnd(shape, 4)
    y.backward(g)
    n = wn[0].size if per_channel else wn.size
    expect = g.numpy() * (1.0 / n + (np.abs(wn) <= 1.0) * alpha)      # SPEC section 2
    np.testing.assert_allclose(w.grad.numpy(), expect, rtol=1e-5, atol=1e-7)


def test_bwn_alpha_hand_checked():
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.5, 0.5, -0.5, 0.0]])
    levels, alpha = Q.BinaryWeight().split(w)
    assert alpha.flatten().tolist() == [2.5, 0.375]
    assert levels.tolist() == [[1, -1, 1, -1], [1, 1, -1, 1]]
    assert Q.BinaryWeight(per_channel=False).split(w)[1].item() == pytest.approx(11.5 / 8)


@pytest.mark.parametrize("hw,k,stride,pad", [((9, 9), 3, 1, 1), ((8, 11), 5, 1, 0),
                                             ((10, 10), 3, 2, 1)])
def test_xnor_input_scale_K(hw, k, stride, pad):
    x = rnd((2, 6) + hw, 5)
    layer = torch.nn.Conv2d(6, 4, k, stride, pad)
    K = Q.XnorSign().scale(x, layer).numpy()
    A = np.abs(x.numpy().astype(np.float64)).mean(1)                      # mean_c |I|
    A = np.pad(A, ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = (A.shape[1] - k) // stride + 1, (A.shape[2] - k) // stride + 1
    ref = np.zeros((2, 1, ho, wo))
    for i in range(ho):
        for j in range(wo):
            ref[:, 0, i, j] = A[:, i * stride:i * stride + k, j * stride:j * stride + k].sum((1, 2)) / (k * k)
    np.testing.assert_allclose(K, ref, rtol=1e-5)
    x2 = rnd((3, 17), 6)
    np.testing.assert_allclose(Q.XnorSign().scale(x2, None).numpy()[:, 0],
                               np.abs(x2.numpy()).mean(1), rtol=1e-6)


# -- TWN and the five-level variant ------------------------------------------------------------
def np_ternary(w, per_channel):
    def one(a):
        d = 0.7 * np.abs(a).mean()
        m = np.abs(a) > d
        alpha = np.abs(a)[m].mean() if m.any() else 0.0
        return alpha * np_sign(a) * m
    return per(w, per_channel, one)


def np_five(w, per_channel):
    def one(a):
        d1 = 0.7 * np.abs(a).mean()
        lev = (np.abs(a) > d1).astype(float) + (np.abs(a) > 3 * d1)
        alpha = (lev * np.abs(a)).sum() / max((lev ** 2).sum(), 1)
        return alpha * np_sign(a) * lev
    return per(w, per_channel, one)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("cls,ref", [(Q.Ternary, np_ternary), (Q.FiveLevel, np_five)])
def test_ternary_forward(shape, per_channel, cls, ref):
    w = rnd(shape, 7).requires_grad_(True)
    y = cls(per_channel=per_channel)(w)
    np.testing.assert_allclose(y.detach().numpy(), ref(w.detach().numpy().astype(np.float64),
                                                       per_channel), rtol=1e-5, atol=1e-7)
    y.backward(torch.ones_like(y))                      # straight-through: identity
    assert torch.equal(w.grad, torch.ones_like(w))


def test_ternary_delta_alpha_hand_checked():
    w = torch.tensor([0.1, -0.5, 1.0, -2.0, 0.0])      # mean|w| = 0.72, Delta = 0.504
    t, alpha = Q.ternary_levels(w)
    assert t.tolist() == [0, 0, 1, -1, 0] and alpha.item() == pytest.approx(1.5)
    w = torch.tensor([0.0, 0.2, -0.6, 1.0, -3.0])      # mean 0.96: Delta1 0.672, Delta2 2.016
    lev, alpha = Q.five_levels(w)
    assert lev.tolist() == [0, 0, 0, 1, -2] and alpha.item() == pytest.approx(7 / 5)
    w = torch.tensor([[1.0, -1.0, 0.1, 0.0], [0.3, 0.3, -0.3, 0.3]])
    t, alpha = Q.ternary_levels(w, per_channel=True)
    assert t.tolist() == [[1, -1, 0, 0], [1, 1, -1, 1]]
    assert alpha.flatten().tolist() == pytest.approx([1.0, 0.3])


# -- DoReFa ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8, 32])
def test_dorefa_weight_forward(shape, k):
    w = rnd(shape, 8, 0.5)
    y = Q.DorefaWeight(k)(w).numpy()
    wn = w.numpy().astype(np.float64)
    if k == 32:
        ref = wn
    elif k == 1:
        ref = np.abs(wn).mean() * np_sign(wn)
    else:
        n = 2 ** k - 1
        t = np.tanh(wn)
        ref = 2 * np.round(n * (t / (2 * np.abs(t).max()) + 0.5)) / n - 1
    np.testing.assert_allclose(y, ref, atol=1e-6)
    levels, scale = Q.DorefaWeight(k).split(w)
    np.testing.assert_allclose((levels * (1 if scale is None else scale)).numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 4, 32])
def test_dorefa_activation_forward(k):
    x = rnd((3, 4, 5, 5), 9, 1.0) + 0.5
    ref = np.clip(x.numpy().astype(np.float64), 0, 1)
    if k < 32:
        ref = np.round(ref * (2 ** k - 1)) / (2 ** k - 1)
    np.testing.assert_allclose(Q.DorefaActivation(k)(x).numpy(), ref, atol=1e-6)
    xg = x.clone().requires_grad_(True)
    Q.DorefaActivation(k)(xg).sum().backward()       # STE through round, clip's own gradient
    np.testing.assert_array_equal(xg.grad.numpy(), ((x >= 0) & (x <= 1)).float().numpy())


def test_quantize_k_levels():
    r = torch.linspace(0, 1, 1001)
    for k in (1, 2, 3):
        v = quantize_k(r, k) * (2 ** k - 1)
        assert torch.equal(v, v.round()) and v.min() == 0 and v.max() == 2 ** k - 1


def _grad_q(dr, k, per_sample=True):
    x = torch.zeros_like(dr, requires_grad=True)
    GradQuantize.apply(x, k, per_sample).backward(dr)
    return x.grad


@pytest.mark.parametrize("k", [2, 4, 6])
@pytest.mark.parametrize("per_sample", [True, False])
def test_dorefa_gradient_levels(k, per_sample):
    dr = rnd((6, 3, 4, 4), 10, 1e-3)
    gq = _grad_q(dr, k, per_sample).numpy().astype(np.float64)
    d = dr.numpy().astype(np.float64)
    m = np.abs(d).reshape(6, -1).max(1)[:, None, None, None] if per_sample else np.abs(d).max()
    lv = (gq / (2 * m) + 0.5) * (2 ** k - 1)             # must be integers 0 .. 2^k - 1
    np.testing.assert_allclose(lv, np.round(lv), atol=1e-3)
    assert lv.min() > -1e-3 and lv.max() < 2 ** k - 1 + 1e-3
    # each value rounds the SPEC argument up or down: within one level of dr
    assert np.all(np.abs(gq - d) <= 2 * m / (2 ** k - 1) + 1e-9)


def test_dorefa_gradient_unbiased_and_identity_at_32():
    torch.manual_seed(1)
    dr = rnd((4, 50), 11)
    mean = torch.stack([_grad_q(dr, 2) for _ in range(4000)]).mean(0)
    step = 2 * dr.abs().amax(1, keepdim=True) / 3          # one level for k = 2
    assert ((mean - dr).abs() / step).max() < 0.06         # ~ 0.5 / sqrt(4000) * 3 sigma
    assert torch.equal(_grad_q(dr, 32), dr)
    assert torch.equal(_grad_q(torch.zeros(3, 4), 4), torch.zeros(3, 4))


def test_dorefa_grad_module_is_identity_forward():
    x = rnd((5, 7), 12).requires_grad_(True)
    y = Q.DorefaGrad(4)(x)
    assert torch.equal(y, x)


# -- registry, bits, uint8 input ----------------------------------------------------------------
def test_registry_names_and_bits():
    expect = {"ste_sign": 1, "stochastic_sign": 1, "xnor_sign": 1, "bwn": 1, "ternary": 2,
              "ternary5": 3, "dorefa_weight": 1, "dorefa_act": 2, "dorefa_grad": 32, "uint8": 8}
    assert set(Q.names()) == set(expect)
    for name, bits in expect.items():
        q = Q.get(name)
        assert q.bits == bits and q.name == name and q.__doc__
    assert Q.get("dorefa_weight", bits=4).bits == 4
    assert Q.get(None) is None
    with pytest.raises(KeyError, match="unknown quantizer"):
        Q.get("nope")


def test_uint8_input_recovers_every_pixel():
    norm = Normalization(Q.FMNIST_MEAN, Q.FMNIST_STD)
    x = torch.from_numpy(norm.table())
    assert torch.equal(Q.Uint8Input()(x), torch.arange(256, dtype=torch.float32))
    other = Normalization(0.2861, 0.3531)                  # a split's slightly different stats
    assert torch.equal(Q.Uint8Input()(torch.from_numpy(other.table())), torch.arange(256.0))
