"""Low-bit model recipes (BNN, XNOR-Net, BWN, TWN, DoReFa-Net), registered for ``--model``.

Every recipe is an ``nn.Sequential`` with named children, so the op order -- where BatchNorm,
pooling and binarization sit -- is explicit and an exporter can walk it.  Inputs are the
normalised float32 images ``(N, 1, 28, 28)`` of ``lowbit.data.Normalization``.  A layer's
``input_quantizer`` is the activation function applied to its input (the sign of BNN, the
k-bit clip of DoReFa), in larq's style; :mod:`lowbit.train.layers` defines the layer forward.

First and last layers keep float weights; the last layer's *input* is quantized like every
hidden activation (BNN, DoReFa) except in XNOR-Net / BWN / TWN, whose last layer is fully real.
``first_layer="bitplane"`` (BNN recipes) makes the first layer BNN Algorithm 4's binary-weight
layer on the 8-bit pixels (``uint8`` input quantizer, ``ste_sign`` weights).

Recipe (defaults)                 layers (``name: op``)
bnn-mlp (hidden 1024, 3 layers)   fc1 float 784-H, bn1, [fc_k bin H-H, bn_k]x2, fc4 H-10
                                  (float weights, sign input), bn4
bnn-lenet5                        conv1 float 20@5x5, pool1, bn1, conv2 bin 50@5x5, pool2, bn2,
                                  flatten, fc1 bin 800-500, bn3, fc2 500-10 (sign input), bn4
xnor-lenet5 (order BACP)          conv1 float, pool1, bn2, conv2 XNOR, pool2, flatten, bn3,
                                  fc1 XNOR, bn4, relu, fc2 float          (B-A-C-P blocks)
xnor-lenet5 order=CBAP            conv1 float, bn1, act1 sign, pool1, conv2 XNOR, bn2,
                                  act2 sign, pool2, flatten, fc1 XNOR, bn3, relu, fc2 float
bwn-lenet5 / twn-lenet5           conv1 float, bn1, relu1, pool1, conv2 Q, bn2, relu2, pool2,
                                  flatten, fc1 Q, bn3, relu3, fc2 float   (Q = bwn / ternary)
dorefa-lenet5 bits="W,A,G"        conv1 float, bn1, pool1, conv2 (W-bit w, A-bit in), grad2,
                                  bn2, pool2, flatten, fc1 (W, A), grad3, bn3, fc2 float (A in)
bnn-vgg-small                     conv1 float 64@3x3; bin 64, pool; bin 128, bin 128, pool;
                                  bin 256, bin 256, pool (7->3); fc1 bin 2304-512; fc2 512-10
BNN recipes and the Bi-Real ResNets take ``bn="batch"`` (default), ``bn="shift"``: shift-based
BatchNorm (BNN paper, Algorithm 3; :mod:`lowbit.train.sbn`) in every BN position, or
``bn="shift-hidden"``: SBN in every BN followed by a sign, an ordinary BatchNorm on the output
logits (bnn-mlp's / bnn-lenet5's bn4, bnn-vgg-small's bn8; Bi-Real has no output BN).
"XNOR" = ``xnor_sign`` input (K scaling) + ``bwn`` weights; "bin" = ``ste_sign`` input and
weights (latent weights clipped to [-1, 1]); binary-input convs pad with -1.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from . import quantizers as Q
from .layers import QuantConv2d, QuantLinear
from .registry import register
from .sbn import make_bn, make_output_bn

__all__ = ["bnn_mlp", "bnn_lenet5", "xnor_lenet5", "bwn_lenet5", "twn_lenet5", "dorefa_lenet5",
           "bnn_vgg_small", "parse_bits"]

# BNN paper: Adam with an exponentially decaying learning rate (lr -> lr * lr_decay at the end).
_BNN = dict(optimizer="adam", schedule="exp", lr_decay=0.01, batch_size=100, weight_decay=0.0)
_REAL = dict(optimizer="adam", schedule="cosine", batch_size=128, weight_decay=0.0)


def _first(kind: str, make_float, make_bitplane):
    if kind == "float":
        return make_float()
    if kind == "bitplane":
        return make_bitplane()
    raise ValueError(f"first_layer: expected 'float' or 'bitplane', got {kind!r}")


def _act(activation: str):
    if activation not in ("ste_sign", "stochastic_sign"):
        raise ValueError(f"activation: expected 'ste_sign' or 'stochastic_sign', got {activation!r}")
    return Q.get(activation)


@register("bnn-mlp", epochs=3, lr=3e-3, **_BNN)
def bnn_mlp(hidden: int = 1024, layers: int = 3, first_layer: str = "float",
            activation: str = "ste_sign", num_classes: int = 10, bn: str = "batch") -> nn.Module:
    """BNN MLP (Hubara et al. 2016, the MNIST net scaled to 3x1024): binary hidden layers, BN
    after every layer, sign activations; first layer float (or 8-bit bit-plane), last float.
    ``bn="shift"``: shift-based BatchNorm (Algorithm 3, lowbit.train.sbn) everywhere;
    ``bn="shift-hidden"``: SBN except an ordinary BN on the output logits."""
    bn1d, _ = make_bn(bn)
    mods = OrderedDict(flatten=nn.Flatten())
    mods["fc1"] = _first(first_layer, lambda: QuantLinear(784, hidden, bias=False),
                         lambda: QuantLinear(784, hidden, bias=False, input_quantizer="uint8",
                                             weight_quantizer="ste_sign"))
    mods["bn1"] = bn1d(hidden)
    for k in range(2, layers + 1):
        mods[f"fc{k}"] = QuantLinear(hidden, hidden, bias=False, input_quantizer=_act(activation),
                                     weight_quantizer="ste_sign")
        mods[f"bn{k}"] = bn1d(hidden)
    k = layers + 1
    mods[f"fc{k}"] = QuantLinear(hidden, num_classes, bias=False, input_quantizer=_act(activation))
    mods[f"bn{k}"] = make_output_bn(bn)(num_classes)
    return nn.Sequential(mods)


@register("bnn-lenet5", epochs=8, lr=1e-2, **_BNN)
def bnn_lenet5(width: float = 1.0, first_layer: str = "float", activation: str = "ste_sign",
               num_classes: int = 10, bn: str = "batch") -> nn.Module:
    """BNN LeNet-5 (Caffe shape, channels x ``width``): conv -> pool -> BN -> sign blocks.
    ``bn="shift"``: shift-based BatchNorm (Algorithm 3, lowbit.train.sbn) everywhere;
    ``bn="shift-hidden"``: SBN except an ordinary BN on the output logits."""
    bn1d, bn2d = make_bn(bn)
    c1, c2, f1 = round(20 * width), round(50 * width), round(500 * width)
    conv1 = _first(first_layer, lambda: QuantConv2d(1, c1, 5, bias=False),
                   lambda: QuantConv2d(1, c1, 5, bias=False, input_quantizer="uint8",
                                       weight_quantizer="ste_sign"))
    return nn.Sequential(OrderedDict([
        ("conv1", conv1), ("pool1", nn.MaxPool2d(2)), ("bn1", bn2d(c1)),
        ("conv2", QuantConv2d(c1, c2, 5, bias=False, input_quantizer=_act(activation),
                              weight_quantizer="ste_sign")),
        ("pool2", nn.MaxPool2d(2)), ("bn2", bn2d(c2)), ("flatten", nn.Flatten()),
        ("fc1", QuantLinear(c2 * 16, f1, bias=False, input_quantizer=_act(activation),
                            weight_quantizer="ste_sign")),
        ("bn3", bn1d(f1)),
        ("fc2", QuantLinear(f1, num_classes, bias=False, input_quantizer=_act(activation))),
        ("bn4", make_output_bn(bn)(num_classes)),
    ]))


def _xnor(cls, *args, **kw):
    return cls(*args, bias=False, input_quantizer="xnor_sign", weight_quantizer="bwn", **kw)


@register("xnor-lenet5", epochs=8, lr=3e-3, **_REAL)
def xnor_lenet5(order: str = "BACP", num_classes: int = 10) -> nn.Module:
    """XNOR-Net LeNet-5 (Rastegari et al. 2016): binary inputs (K scaling) and binary weights
    (alpha per output channel) in conv2 and fc1; blocks BatchNorm -> BinActiv -> BinConv -> Pool
    (``order="BACP"``, the paper's) or the usual Conv -> BatchNorm -> BinActiv -> Pool
    (``order="CBAP"``)."""
    if order == "BACP":
        mods = [("conv1", QuantConv2d(1, 20, 5)), ("pool1", nn.MaxPool2d(2)),
                ("bn2", nn.BatchNorm2d(20)), ("conv2", _xnor(QuantConv2d, 20, 50, 5)),
                ("pool2", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
                ("bn3", nn.BatchNorm1d(800)), ("fc1", _xnor(QuantLinear, 800, 500)),
                ("bn4", nn.BatchNorm1d(500))]
    elif order == "CBAP":
        mods = [("conv1", QuantConv2d(1, 20, 5, bias=False)), ("bn1", nn.BatchNorm2d(20)),
                ("act1", Q.SteSign()), ("pool1", nn.MaxPool2d(2)),
                ("conv2", _xnor(QuantConv2d, 20, 50, 5)), ("bn2", nn.BatchNorm2d(50)),
                ("act2", Q.SteSign()), ("pool2", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
                ("fc1", _xnor(QuantLinear, 800, 500)), ("bn3", nn.BatchNorm1d(500))]
    else:
        raise ValueError(f"order: expected 'BACP' or 'CBAP', got {order!r}")
    mods += [("relu", nn.ReLU()), ("fc2", QuantLinear(500, num_classes))]
    return nn.Sequential(OrderedDict(mods))


def _weight_only_lenet5(wq_factory, num_classes: int) -> nn.Module:
    return nn.Sequential(OrderedDict([
        ("conv1", QuantConv2d(1, 20, 5, bias=False)), ("bn1", nn.BatchNorm2d(20)),
        ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", QuantConv2d(20, 50, 5, bias=False, weight_quantizer=wq_factory())),
        ("bn2", nn.BatchNorm2d(50)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", QuantLinear(800, 500, bias=False, weight_quantizer=wq_factory())),
        ("bn3", nn.BatchNorm1d(500)), ("relu3", nn.ReLU()),
        ("fc2", QuantLinear(500, num_classes)),
    ]))


@register("bwn-lenet5", epochs=6, lr=3e-3, **_REAL)
def bwn_lenet5(per_channel: bool = True, num_classes: int = 10) -> nn.Module:
    """Binary-Weight-Network LeNet-5: conv2 and fc1 weights alpha * sign(W), float activations."""
    return _weight_only_lenet5(lambda: Q.BinaryWeight(per_channel=per_channel), num_classes)


@register("twn-lenet5", epochs=6, lr=3e-3, **_REAL)
def twn_lenet5(per_channel: bool = False, levels: int = 3, num_classes: int = 10) -> nn.Module:
    """Ternary-Weight-Network LeNet-5: conv2 and fc1 weights alpha * {-1,0,1} (``levels=3``)
    or the five-level alpha * {-2,-1,0,1,2} (``levels=5``); float activations."""
    if levels not in (3, 5):
        raise ValueError(f"levels: expected 3 or 5, got {levels!r}")
    cls = Q.Ternary if levels == 3 else Q.FiveLevel
    return _weight_only_lenet5(lambda: cls(per_channel=per_channel), num_classes)


def parse_bits(bits) -> tuple[int, int, int]:
    """``"1,2,6"`` / ``"1-2-6"`` / ``(1, 2, 6)`` -> (W, A, G) bits, each 1..32."""
    if isinstance(bits, str):
        parts = bits.replace("-", ",").split(",")
    else:
        parts = list(bits)
    try:
        w, a, g = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"bits: expected 'W,A,G' such as '1,2,6', got {bits!r}") from None
    for what, b in (("W", w), ("A", a), ("G", g)):
        if not 1 <= b <= 32:
            raise ValueError(f"bits: {what} must be in 1..32, got {b}")
    return w, a, g


@register("dorefa-lenet5", epochs=5, lr=3e-3, **_REAL)
def dorefa_lenet5(bits="1,2,6", num_classes: int = 10) -> nn.Module:
    """DoReFa-Net LeNet-5 with W-A-G bits (Zhou et al. 2016): conv2 and fc1 have W-bit weights
    and A-bit inputs (clip to [0, 1] then quantize), their output gradients are G-bit; fc2 has
    float weights and an A-bit input."""
    w, a, g = parse_bits(bits)

    def q(cls, *args, wq=True, **kw):
        return cls(*args, bias=False, input_quantizer=Q.DorefaActivation(a),
                   weight_quantizer=Q.DorefaWeight(w) if wq else None, **kw)
    return nn.Sequential(OrderedDict([
        ("conv1", QuantConv2d(1, 20, 5, bias=False)), ("bn1", nn.BatchNorm2d(20)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", q(QuantConv2d, 20, 50, 5)), ("grad2", Q.DorefaGrad(g)),
        ("bn2", nn.BatchNorm2d(50)), ("pool2", nn.MaxPool2d(2)), ("flatten", nn.Flatten()),
        ("fc1", q(QuantLinear, 800, 500)), ("grad3", Q.DorefaGrad(g)),
        ("bn3", nn.BatchNorm1d(500)),
        ("fc2", q(QuantLinear, 500, num_classes, wq=False)),
    ]))


@register("bnn-vgg-small", epochs=1, lr=1e-2, **_BNN)
def bnn_vgg_small(width: float = 1.0, first_layer: str = "float", num_classes: int = 10,
                  bn: str = "batch") -> nn.Module:
    """Binary VGG-small for 28x28 (BNN): 64-64-pool-128-128-pool-256-256-pool (3x3 convs,
    padding 1 -- binary convs pad with -1), fc 2304-512 binary, fc 512-10 float weights; each
    conv -> [pool] -> BN -> sign.  Conv-heavy (~0.12 GMAC per image): the speed-work model.
    ``bn="shift"``: shift-based BatchNorm (Algorithm 3, lowbit.train.sbn) everywhere;
    ``bn="shift-hidden"``: SBN except an ordinary BN on the output logits."""
    bn1d, bn2d = make_bn(bn)
    c = [round(v * width) for v in (64, 64, 128, 128, 256, 256)]
    f1 = round(512 * width)
    mods = OrderedDict()
    mods["conv1"] = _first(first_layer, lambda: QuantConv2d(1, c[0], 3, padding=1, bias=False),
                           lambda: QuantConv2d(1, c[0], 3, padding=1, bias=False,
                                               input_quantizer="uint8", weight_quantizer="ste_sign"))
    mods["bn1"] = bn2d(c[0])
    for i in range(1, 6):
        mods[f"conv{i + 1}"] = QuantConv2d(c[i - 1], c[i], 3, padding=1, bias=False,
                                           input_quantizer="ste_sign", weight_quantizer="ste_sign")
        if i in (1, 3, 5):
            mods[f"pool{i + 1}"] = nn.MaxPool2d(2)
        mods[f"bn{i + 1}"] = bn2d(c[i])
    mods["flatten"] = nn.Flatten()
    mods["fc1"] = QuantLinear(c[5] * 9, f1, bias=False, input_quantizer="ste_sign",
                              weight_quantizer="ste_sign")
    mods["bn7"] = bn1d(f1)
    mods["fc2"] = QuantLinear(f1, num_classes, bias=False, input_quantizer="ste_sign")
    mods["bn8"] = make_output_bn(bn)(num_classes)
    return nn.Sequential(mods)
