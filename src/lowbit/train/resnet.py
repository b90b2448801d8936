"""Bi-Real-Net-style binary ResNets (Liu et al., ECCV 2018), registered for ``--model``.

``bireal-resnet``: a real-valued shortcut around *every* binary 3x3 conv::

    stem        conv0  float Conv2d in_channels -> width, 3x3, padding 1;  bn0
    block       y = bn(conv(sign(x))) + x
                conv = QuantConv2d(c, c, 3, padding=1, ste_sign input and weights, no bias,
                pad_value -1: the binary padding of the runtime)
    downsample  y = bn(conv_s2(sign(x))) + shortcut(x)          (first block of stages 2, 3, ...)
                conv_s2 = binary 3x3, stride 2, padding 1, c -> 2c
                shortcut = AvgPool2d(2) -> float Conv2d 1x1 c -> 2c -> BatchNorm2d (Bi-Real's)
    head        [relu] -> AdaptiveAvgPool2d(1) -> Flatten -> float Linear(channels, classes)

``bireal-plain``: the same network with every shortcut removed (``shortcut=False``): each
block is ``y = bn(conv(sign(x)))``, the downsampling block ``y = bn(conv_s2(sign(x)))`` -- a
plain BNN chain of the same width and depth, for the accuracy comparison.

The sign is the ``ste_sign`` *input quantizer* of each binary conv (larq style, like
:mod:`lowbit.train.recipes`): the residual stream between blocks stays real-valued, only what
enters a binary conv is binarized.  Weights are ``ste_sign`` (BNN: BatchNorm after the conv
absorbs any scale, so BWN's alpha is redundant); latent weights are clipped to [-1, 1] by
``QuantConv2d.post_step``.

Keyword arguments: ``width`` (channels of the first stage; stage i has ``width * 2**i``),
``blocks`` (binary blocks per stage: ``"2,2,2"``, a list, or an int n = n blocks in each of
3 stages; the first block of every stage after the first downsamples), ``in_channels``
(1 for Fashion-MNIST, 3 for RGB such as 3x32x32 CIFAR images: the network is fully
convolutional up to the global pool, so any input size works), ``num_classes``,
``shortcut``, ``head`` (``"relu"`` or ``"none"``: what precedes the global pool), ``bn``
(``"batch"``, or ``"shift"``: the BNN paper's shift-based BatchNorm, lowbit.train.sbn), ``act``
(``"none"``, Bi-Real's; or ``"prelu"``: a per-channel nn.PReLU after each block's sum, in
ReActNet's spirit -- no measurable gain in a 6-epoch pilot on 10 000 images, 87.25% vs 87.15%,
so not the default).

Defaults (width 48, blocks 2,2,2: 0.69 M parameters, 83 M MACs per 28x28 image of which 81 M
binary; Adam 2e-3, per-step cosine, batch 128, 14 epochs) were sized for one torch thread on
the 2-core dev box: ~240 s per 55 000-image epoch idle (width 32: ~150 s; width 64: ~410 s).
Checkpoints store only the kwargs given, so changing these builder defaults changes what old
checkpoints rebuild to: keep them.

The number of downsamplings must keep spatial sizes even where they halve (28 -> 14 -> 7 with
3 stages; 32 -> 16 -> 8 -> 4 with 4): AvgPool2d(2) and the stride-2 conv agree then.

Only these module types occur: nn.Conv2d, QuantConv2d, nn.BatchNorm2d, nn.AvgPool2d,
nn.AdaptiveAvgPool2d(1), nn.ReLU, nn.PReLU (``act="prelu"`` only), nn.Flatten, nn.Linear,
plus ``+``.  Every forward is plain
(no data-dependent control flow), so :func:`trace` (``torch.fx`` with the quantized layers as
leaf modules) gives the whole graph; the number of ``add`` nodes equals the number of binary
convs for ``bireal-resnet`` and is 0 for ``bireal-plain``.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import fx, nn

from .layers import QuantConv2d, QuantMixin
from .registry import register
from .sbn import make_bn

__all__ = ["BiRealBlock", "BiRealNet", "bireal_resnet", "bireal_plain", "parse_blocks",
           "trace", "LeafTracer"]

# Adam + per-step cosine to 0, no weight decay (latent binary weights are clipped instead).
CONVS = ("binary", "float")

_DEFAULTS = dict(epochs=14, lr=2e-3, optimizer="adam", schedule="cosine", batch_size=128,
                 weight_decay=0.0)


def parse_blocks(blocks) -> tuple[int, ...]:
    """``"2,2,2"`` / ``[2, 2, 2]`` / ``2`` (= 2 per stage, 3 stages) -> ``(2, 2, 2)``."""
    if isinstance(blocks, int):
        parts = [blocks] * 3
    elif isinstance(blocks, str):
        parts = [p for p in blocks.replace("-", ",").split(",") if p.strip()]
    else:
        parts = list(blocks)
    try:
        out = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"blocks: expected blocks per stage such as '2,2,2', got {blocks!r}") from None
    if not out or any(b < 1 for b in out):
        raise ValueError(f"blocks: every stage needs at least one block, got {blocks!r}")
    return out


def binary_conv3x3(cin: int, cout: int, stride: int = 1) -> QuantConv2d:
    """BNN 3x3 conv: sign of the input, sign of the latent weights, -1 padding, no bias."""
    return QuantConv2d(cin, cout, 3, stride=stride, padding=1, bias=False,
                       input_quantizer="ste_sign", weight_quantizer="ste_sign")


class BiRealBlock(nn.Module):
    """``y = bn(conv(sign(x))) [+ shortcut(x)]``; with ``stride=2`` conv is stride 2, channels
    ``cin -> cout`` and the shortcut is AvgPool2d(2) -> float 1x1 conv -> BN."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shortcut: bool = True,
                 act: str = "none", bn: str = "batch", conv: str = "binary"):
        super().__init__()
        bn2d = make_bn(bn)[1]
        if stride not in (1, 2):
            raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
        if stride == 1 and cin != cout:
            raise ValueError("a stride-1 block keeps its channels")
        if conv not in CONVS:
            raise ValueError(f"conv: expected one of {', '.join(CONVS)}, got {conv!r}")
        # the float twin's nonlinearity is a ReLU where the binary block has its sign
        self.pre = nn.ReLU() if conv == "float" else None
        self.conv = (binary_conv3x3(cin, cout, stride) if conv == "binary" else
                     nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False))
        self.bn = bn2d(cout)
        self.shortcut = bool(shortcut)
        self.downsample = None
        if shortcut and stride == 2:
            self.downsample = nn.Sequential(OrderedDict([
                ("pool", nn.AvgPool2d(2)),
                ("conv", nn.Conv2d(cin, cout, 1, bias=False)),
                ("bn", bn2d(cout))]))
        if act not in ("none", "prelu"):
            raise ValueError(f"act: expected 'none' or 'prelu', got {act!r}")
        self.act = nn.PReLU(cout, init=0.25) if act == "prelu" else None

    def forward(self, x):
        out = self.bn(self.conv(x if self.pre is None else self.pre(x)))
        # build-time settings, not data: fx sees a fixed graph
        if self.shortcut:
            out = out + (self.downsample(x) if self.downsample is not None else x)
        if self.act is not None:
            out = self.act(out)
        return out

    def extra_repr(self) -> str:
        return f"shortcut={self.shortcut}"


class BiRealNet(nn.Module):
    """Stem (float conv + BN), stages of :class:`BiRealBlock`, head (optional ReLU, global
    average pool, flatten, float linear).  See the module docstring."""

    def __init__(self, width: int = 48, blocks=(2, 2, 2), in_channels: int = 1,
                 num_classes: int = 10, shortcut: bool = True, head: str = "relu",
                 act: str = "none", bn: str = "batch", conv: str = "binary"):
        super().__init__()
        bn2d = make_bn(bn)[1]
        blocks = parse_blocks(blocks)
        width, in_channels = int(width), int(in_channels)
        if width < 1 or in_channels < 1 or int(num_classes) < 1:
            raise ValueError("width, in_channels and num_classes must be positive")
        if head not in ("relu", "none"):
            raise ValueError(f"head: expected 'relu' or 'none', got {head!r}")
        self.conv0 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn0 = bn2d(width)
        layers: list[tuple[str, nn.Module]] = []
        c = width
        for s, n in enumerate(blocks):
            for b in range(n):
                down = s > 0 and b == 0
                cout = c * 2 if down else c
                layers.append((f"s{s + 1}b{b + 1}",
                               BiRealBlock(c, cout, 2 if down else 1, shortcut, act, bn, conv)))
                c = cout
        self.blocks = nn.Sequential(OrderedDict(layers))
        self.relu = nn.ReLU() if head == "relu" else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, int(num_classes))

    def forward(self, x):
        x = self.blocks(self.bn0(self.conv0(x)))
        if self.relu is not None:
            x = self.relu(x)
        return self.fc(self.flatten(self.pool(x)))


@register("bireal-resnet", **_DEFAULTS)
def bireal_resnet(width: int = 48, blocks="2,2,2", in_channels: int = 1, num_classes: int = 10,
                  shortcut: bool = True, head: str = "relu", act: str = "none",
                  bn: str = "batch", conv: str = "binary") -> nn.Module:
    """Bi-Real-Net-style binary ResNet (Liu et al. 2018): float stem conv+BN, then blocks
    y = BN(BinConv3x3(sign(x))) + x with a real shortcut around every binary conv; stride-2
    blocks double the channels with an AvgPool2d(2) -> float 1x1 conv -> BN shortcut; global
    average pool and a float linear.  ``width`` (48), ``blocks`` per stage ("2,2,2"),
    ``in_channels`` (1; 3 for RGB 3x32x32), ``shortcut=False`` = the plain chain;
    ``bn="shift"``: shift-based BatchNorm everywhere (lowbit.train.sbn); ``conv="float"``: the
    float twin (ReLU -> float 3x3 conv where the binary block has sign -> binary conv), e.g. a
    distillation teacher (``lowbit train --teacher``)."""
    return BiRealNet(width, blocks, in_channels, num_classes, shortcut, head, act, bn, conv)


@register("bireal-plain", **_DEFAULTS)
def bireal_plain(width: int = 48, blocks="2,2,2", in_channels: int = 1, num_classes: int = 10,
                 head: str = "relu", act: str = "none", bn: str = "batch") -> nn.Module:
    """bireal-resnet without its shortcuts (y = BN(BinConv3x3(sign(x))) in every block, the
    stride-2 blocks without their 1x1 shortcut): a plain binary chain of the same width and
    depth, to measure what the real-valued shortcuts buy."""
    return BiRealNet(width, blocks, in_channels, num_classes, False, head, act, bn)


class LeafTracer(fx.Tracer):
    """``torch.fx`` tracer that keeps QuantConv2d / QuantLinear as leaf modules (their own
    forward has shape checks of the channels-last layout that fx cannot trace; an exporter maps
    them as one op each) besides torch.nn's leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QuantMixin) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """``fx.symbolic_trace`` of ``model`` with the quantized layers as leaves."""
    graph = LeafTracer().trace(model)
    return fx.GraphModule(model, graph, type(model).__name__)
