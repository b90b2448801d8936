"""QuantConv2d / QuantLinear: the exact eval forward against numpy, training path, clipping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.train import quantizers as Q
from lowbit.train.layers import QuantConv2d, QuantLinear, QuantMixin, quant_layers


def np_conv(x, w, stride=1, pad=0, pad_value=0.0):
    """Direct NCHW convolution (cross-correlation) in float64 with constant padding."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            y[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return y


def sgn(a):
    return np.where(a >= 0, 1.0, -1.0)


def box(a, k, stride, pad):
    a = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return np_conv(a, np.full((1, 1, k, k), 1.0 / (k * k)), stride)


def test_one_mixin_for_both_layers():
    assert issubclass(QuantConv2d, QuantMixin) and issubclass(QuantLinear, QuantMixin)
    assert QuantConv2d.forward is QuantMixin.forward is QuantLinear.forward
    assert issubclass(QuantConv2d, torch.nn.Conv2d) and issubclass(QuantLinear, torch.nn.Linear)


@pytest.mark.parametrize("cin,cout,k,stride,pad,hw", [(3, 8, 3, 1, 1, 9), (65, 5, 3, 2, 1, 10),
                                                      (4, 6, 5, 1, 0, 12), (2, 3, 1, 1, 0, 5)])
def test_bnn_conv_is_integer_xnor_conv_with_minus_one_padding(cin, cout, k, stride, pad, hw):
    torch.manual_seed(0)
    layer = QuantConv2d(cin, cout, k, stride, pad, bias=False, input_quantizer="ste_sign",
                        weight_quantizer="ste_sign").eval()
    assert layer.pad_value == -1.0 and layer.integer_accumulator
    x = torch.randn(2, cin, hw, hw)
    y = layer(x).detach().numpy()
    ref = np_conv(sgn(x.numpy()), sgn(layer.weight.detach().numpy()), stride, pad, -1.0)
    np.testing.assert_array_equal(y, ref)                      # exact integers
    layer.train()
    np.testing.assert_array_equal(layer(x).detach().numpy(), ref)


def test_pad_value_zero_and_explicit():
    x = torch.randn(1, 2, 6, 6)
    for pv in (0.0, 1.0, -1.0):
        layer = QuantConv2d(2, 3, 3, 1, 1, bias=False, input_quantizer="ste_sign",
                            weight_quantizer="ste_sign", pad_value=pv).eval()
        ref = np_conv(sgn(x.numpy()), sgn(layer.weight.detach().numpy()), 1, 1, pv)
        np.testing.assert_array_equal(layer(x).detach().numpy(), ref)
    assert QuantConv2d(2, 3, 3, padding=1, input_quantizer="dorefa_act").pad_value == 0.0
    assert QuantConv2d(2, 3, 3, padding=1).pad_value == 0.0
    with pytest.raises(ValueError, match="padding"):
        QuantConv2d(2, 3, 3, padding="same")


@pytest.mark.parametrize("per_channel", [True, False])
def test_xnor_conv_forward(per_channel):
    torch.manual_seed(1)
    layer = QuantConv2d(6, 4, 3, 2, 1, bias=True, input_quantizer="xnor_sign",
                        weight_quantizer=Q.BinaryWeight(per_channel=per_channel))
    layer.bias.data.normal_()
    x = torch.randn(3, 6, 11, 11)
    w = layer.weight.detach().numpy().astype(np.float64)
    alpha = np.abs(w).reshape(4, -1).mean(1) if per_channel else np.full(4, np.abs(w).mean())
    K = box(np.abs(x.numpy().astype(np.float64)).mean(1, keepdims=True), 3, 2, 1)
    acc = np_conv(sgn(x.numpy()), sgn(w), 2, 1, -1.0)
    ref = acc * alpha[None, :, None, None] * K + layer.bias.detach().numpy()[None, :, None, None]
    for mode in (layer.eval(), layer.train()):
        np.testing.assert_allclose(mode(x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_xnor_linear_forward():
    layer = QuantLinear(17, 5, bias=False, input_quantizer="xnor_sign", weight_quantizer="bwn").eval()
    x = torch.randn(4, 17)
    w = layer.weight.detach().numpy().astype(np.float64)
    xn = x.numpy().astype(np.float64)
    ref = (sgn(xn) @ sgn(w).T) * np.abs(w).mean(1)[None] * np.abs(xn).mean(1, keepdims=True)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("wq,ref", [("ternary", "t"), ("ternary5", "f"), ("bwn", "b")])
def test_weight_only_layers_float_input(wq, ref):
    from test_quantizers import np_five, np_ternary
    layer = QuantConv2d(3, 4, 3, padding=1, bias=False, weight_quantizer=wq).eval()
    assert layer.pad_value == 0.0 and not layer.integer_accumulator
    x = torch.randn(2, 3, 7, 7)
    w = layer.weight.detach().numpy().astype(np.float64)
    wq_np = {"t": lambda: np_ternary(w, False), "f": lambda: np_five(w, False),
             "b": lambda: np.abs(w).reshape(4, -1).mean(1)[:, None, None, None] * sgn(w)}[ref]()
    np.testing.assert_allclose(layer(x).detach().numpy(), np_conv(x.numpy(), wq_np, 1, 1),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wb,ab", [(1, 2), (2, 2), (4, 4), (2, 32), (32, 4)])
def test_dorefa_layer_forward(wb, ab):
    torch.manual_seed(2)
    layer = QuantConv2d(3, 4, 3, padding=1, bias=False, weight_quantizer=Q.DorefaWeight(wb),
                        input_quantizer=Q.DorefaActivation(ab)).eval()
    assert layer.integer_accumulator == (wb < 32 and ab < 32)
    x = torch.rand(2, 3, 6, 6) * 1.4 - 0.2
    w = layer.weight.detach().numpy().astype(np.float64)
    if wb == 1:
        wq = np.abs(w).mean() * sgn(w)
    elif wb == 32:
        wq = w
    else:
        t = np.tanh(w)
        wq = 2 * np.round((2 ** wb - 1) * (t / (2 * np.abs(t).max()) + 0.5)) / (2 ** wb - 1) - 1
    xq = np.clip(x.numpy().astype(np.float64), 0, 1)
    if ab < 32:
        xq = np.round(xq * (2 ** ab - 1)) / (2 ** ab - 1)
    ref = np_conv(xq, wq, 1, 1, 0.0)
    np.testing.assert_allclose(layer(x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    if layer.integer_accumulator:   # eval: integer accumulator times the two scales, exactly
        wl, sw = layer.split_weight()
        xl, sx = layer.input_quantizer.split(x)
        acc = np_conv(xl.numpy(), wl.numpy(), 1, 1, 0.0)
        assert np.array_equal(acc, np.round(acc))
        exact = (torch.from_numpy(acc).float() * sw) * sx
        assert torch.equal(layer(x).detach(), exact)


def test_bitplane_first_layer_is_algorithm_4():
    """sum_n 2^(n-1) (bit-plane_n . sign(W)) == conv(u8, sign(W)), exactly."""
    torch.manual_seed(3)
    layer = QuantConv2d(1, 5, 5, padding=2, bias=False, input_quantizer="uint8",
                        weight_quantizer="ste_sign").eval()
    assert layer.pad_value == 0.0 and layer.weight_clip == 1.0
    u8 = torch.randint(0, 256, (2, 1, 12, 12))
    x = (u8.float() / 255 - Q.FMNIST_MEAN) / Q.FMNIST_STD
    wb = sgn(layer.weight.detach().numpy())
    planes = sum(2 ** n * np_conv(((u8.numpy() >> n) & 1).astype(float), wb, 1, 2, 0.0)
                 for n in range(8))
    np.testing.assert_array_equal(layer(x).detach().numpy(), planes)


def test_post_step_clips_bnn_latent_weights_only():
    bnn = QuantLinear(4, 3, weight_quantizer="ste_sign")
    bwn = QuantLinear(4, 3, weight_quantizer="bwn")
    for layer in (bnn, bwn):
        layer.weight.data = torch.linspace(-3, 3, 12).reshape(3, 4)
        layer.post_step()
    assert bnn.weight.abs().max() == 1.0 and bwn.weight.abs().max() == 3.0
    assert QuantLinear(4, 3, weight_quantizer="ste_sign", weight_clip=None).weight_clip is None


def test_costs_and_summary_columns():
    from lowbit.train.summary import format_table, summarize
    model = torch.nn.Sequential(
        QuantConv2d(1, 8, 3, padding=1, bias=False),
        QuantConv2d(8, 70, 3, padding=1, bias=False, input_quantizer="ste_sign",
                    weight_quantizer="ste_sign"),
        torch.nn.Flatten(),
        QuantLinear(70 * 28 * 28, 10, input_quantizer=Q.DorefaActivation(2),
                    weight_quantizer=Q.DorefaWeight(2)))
    s = summarize(model)
    r0, r1, r2 = (r for r in s.rows if r.kind.startswith("Quant"))
    assert r1.packed_bytes == 70 * 2 * 8                       # fan-in 72 -> 2 words per row
    assert r1.extra["BOPs"] == r1.macs == 70 * 28 * 28 * 72 and r1.extra["float MACs"] == 0
    assert r0.extra["BOPs"] == 0 and r0.extra["float MACs"] == r0.macs
    assert r2.extra["BOPs"] == r2.macs * 4 and r2.bits == 2
    assert r2.packed_bytes == 10 * 2 * 8 * 858 + 4 + 4 * 10   # 2 planes, scale, bias fp32
    assert "BOPs" in format_table(s) and len(quant_layers(model)) == 3
