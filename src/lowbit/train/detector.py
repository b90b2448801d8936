"""A tiny one-stage detector (CenterNet / FOMO style) with a low-bit backbone.

``build_detector(backbone="bnn", in_channels=1, num_classes=1, width=16, stride=8)`` returns a
fully convolutional ``nn.Module`` whose forward gives three maps on the ``stride`` grid::

    heatmap_logits  (N, K, H/s, W/s)   per-class centre heatmap, before the sigmoid
    size            (N, 2, H/s, W/s)   log(box w / s), log(box h / s)   (log grid units)
    offset          (N, 2, H/s, W/s)   sub-cell centre offset (dx, dy), trained in [0, 1)

(Zhou et al. 2019, "Objects as Points"; FOMO's centroid on a 1/8 grid.)  Layout, with ``c =
width``::

    stem      Conv2d(in, c, 3, stride 2, pad 1) [-> MaxPool2d(2)] -> BN -> act
              float by default (act: Hardtanh for binary-input backbones, ReLU otherwise);
              ``stem_pool`` adds the max pool (the stem then ends at stride 4)
    stages    stage 1 at the stem's stride: ``blocks`` blocks, c channels; then one stage per
              further halving (up to ``stride``): a downsampling block c -> 2c, then
              ``blocks`` blocks (``blocks``: one count for all stages, or one per stage)
    block     y = BN(QConv3x3(a(x))) + x                                    (Bi-Real style)
    down      y = BN(QConv3x3_s2(a(x))) + BN(Conv1x1(AvgPool2d(2)(x)))      (float shortcut)
    head      Conv2d(C, h, 3, pad 1) -> BN -> ReLU, then three float 1x1 convs (with bias)
    fpn       (``fpn=True``) the stages reach 2 x ``stride``; their last output is upsampled
              x2 (nearest) and concatenated with the features at ``stride`` (FPN-lite: the
              head sees the fine grid and the coarse context), so C = c_s + c_2s

``QConv`` is a :class:`~lowbit.train.layers.QuantConv2d` with the quantizers of the scheme
``backbone`` (:func:`lowbit.train.convert.quantize`: ``bnn`` = sign inputs and weights,
``xnor``, ``bwn``, ``twn``, ``dorefa:W,A,G``; ``float`` = plain nn.Conv2d).  ``a`` is the
conv's own input quantizer for schemes that quantize activations (sign, DoReFa clip), and an
explicit ReLU (pre-activation) for the float-input schemes (float, bwn, twn).  The residual
stream stays real-valued, as in Bi-Real-Net (Liu et al. 2018): only what enters a binary conv is
binarised.  ``stem="quant"`` / ``head="quant"`` quantize the stem conv / the head's 3x3 conv
too (stem: weights only, its input is the image); the 1x1 output convs, the shortcut convs and
the input stay float (BiDet and every binary detector keep the ends at higher precision).

Any input whose height and width are divisible by ``stride`` (2 x ``stride`` with ``fpn``) works (160x120, 128x128,
320x240 for stride 8; gray or RGB): every halving then sees an even size, so the AvgPool2d(2)
shortcut and the stride-2 conv agree.  Only fx-exportable modules occur (Conv2d, QuantConv2d,
BatchNorm2d, AvgPool2d, ReLU, Hardtanh, ``+``; Upsample and ``torch.cat`` with ``fpn``), so ``lowbit.train.export.export_model`` writes
the three outputs in this order.  ``heatmap`` bias starts at -log((1 - 0.1) / 0.1) = -2.19
(CenterNet's prior: every cell starts at p = 0.1).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from .convert import quantize

__all__ = ["DETECTOR", "BACKBONES", "build_detector", "DetectorNet", "detector_spec",
           "out_size"]

DETECTOR = "lowbit.train.detector:build_detector"   # the builder name checkpoints store
BACKBONES = ("bnn", "xnor", "bwn", "twn", "dorefa:W,A,G", "float")
STRIDES = (4, 8, 16)
_FLOAT_INPUT = ("float", "bwn", "twn")              # schemes whose convs see float inputs
PRIOR = 0.1                                         # initial heatmap probability


def _check_backbone(backbone: str) -> str:
    if not isinstance(backbone, str):
        raise ValueError(f"backbone: expected one of {', '.join(BACKBONES)}, got {backbone!r}")
    b = backbone.strip().lower()
    if b not in ("bnn", "xnor", "bwn", "twn", "float") and not b.startswith("dorefa:"):
        raise ValueError(f"backbone: expected one of {', '.join(BACKBONES)}, got {backbone!r}")
    return b


class Block(nn.Module):
    """``y = bn(conv(act(x))) + shortcut(x)``; stride 2 doubles the channels and uses the
    AvgPool2d(2) -> float 1x1 conv -> BN shortcut.  ``conv`` starts as nn.Conv2d and is swapped
    for the scheme's QuantConv2d by :func:`build_detector`."""

    def __init__(self, cin: int, cout: int, stride: int, preact: bool):
        super().__init__()
        self.act = nn.ReLU() if preact else None
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.down = None
        if stride == 2:
            self.down = nn.Sequential(OrderedDict([
                ("pool", nn.AvgPool2d(2)), ("conv", nn.Conv2d(cin, cout, 1, bias=False)),
                ("bn", nn.BatchNorm2d(cout))]))

    def forward(self, x):
        y = self.bn(self.conv(x if self.act is None else self.act(x)))
        return y + (x if self.down is None else self.down(x))


class Head(nn.Module):
    """3x3 conv -> BN -> ReLU, then 1x1 convs to K heatmap logits, 2 sizes, 2 offsets."""

    def __init__(self, cin: int, hidden: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, hidden, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.relu = nn.ReLU()
        self.heatmap = nn.Conv2d(hidden, num_classes, 1)
        self.size = nn.Conv2d(hidden, 2, 1)
        self.offset = nn.Conv2d(hidden, 2, 1)
        nn.init.constant_(self.heatmap.bias, -math.log((1 - PRIOR) / PRIOR))
        nn.init.zeros_(self.size.bias)
        nn.init.constant_(self.offset.bias, 0.5)

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        return self.heatmap(h), self.size(h), self.offset(h)


class DetectorNet(nn.Module):
    """Stem, stages of :class:`Block`, :class:`Head` (module docstring).  ``forward(x)`` ->
    ``(heatmap_logits (N, K, h, w), size (N, 2, h, w), offset (N, 2, h, w))``."""

    def __init__(self, in_channels: int, num_classes: int, width: int, stride: int,
                 blocks, head_channels: int, binary_stem_act: bool, preact: bool,
                 stem_pool: bool = False, fpn: bool = False):
        super().__init__()
        c = width
        stem = [("conv", nn.Conv2d(in_channels, c, 3, 2, 1, bias=False))]
        if stem_pool:
            stem.append(("pool", nn.MaxPool2d(2)))
        self.stem = nn.Sequential(OrderedDict(stem + [
            ("bn", nn.BatchNorm2d(c)),
            ("act", nn.Hardtanh() if binary_stem_act else nn.ReLU())]))
        stages: list[tuple[str, nn.Module]] = []
        first = 2 if stem_pool else 1                 # the stem's own halvings
        top = int(math.log2(stride)) + (1 if fpn else 0)
        for k, s in enumerate(range(first - 1, top)):   # s = 0 at stride 2
            if k > 0:
                stages.append((f"s{s + 1}down", Block(c, 2 * c, 2, preact)))
                c *= 2
            for b in range(blocks[k]):
                stages.append((f"s{s + 1}b{b + 1}", Block(c, c, 1, preact)))
        self.up = self.coarse = None
        if fpn:                                       # the last stage runs on the coarse grid
            cut = next(i for i, (n, _) in enumerate(stages) if n == f"s{top}down")
            stages, coarse = stages[:cut], stages[cut:]
            self.coarse = nn.Sequential(OrderedDict(coarse))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            c += c // 2                               # concat: c_s + c_2s channels
        self.stages = nn.Sequential(OrderedDict(stages))
        self.head = Head(c, head_channels, num_classes)
        self.stride, self.num_classes = int(stride), int(num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        if self.coarse is not None:
            x = torch.cat([x, self.up(self.coarse(x))], 1)
        return self.head(x)


def _parse_blocks(blocks, stages: int):
    """``blocks`` as a tuple of ``stages`` counts: an int (every stage), ``"1,2,2"`` or a list
    (one count per stage, the first at the stem's stride)."""
    if isinstance(blocks, bool):
        raise ValueError(f"blocks: expected an integer or one count per stage, got {blocks!r}")
    if isinstance(blocks, int):
        return blocks if blocks >= 0 else None, (blocks,) * stages
    try:
        parts = blocks.replace("-", ",").split(",") if isinstance(blocks, str) else list(blocks)
        counts = tuple(int(str(v).strip()) for v in parts if str(v).strip())
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"blocks: expected an integer or one count per stage such as '1,2,2', "
                         f"got {blocks!r}") from None
    if len(counts) != stages or min(counts, default=0) < 0:
        raise ValueError(f"blocks: expected {stages} counts >= 0 (one per stage), got {blocks!r}")
    return list(counts), counts


def build_detector(backbone: str = "bnn", in_channels: int = 1, num_classes: int = 1,
                   width: int = 16, stride: int = 8, head: str = "float", stem: str = "float",
                   blocks=1, head_channels: int = 0, stem_pool: bool = False,
                   fpn: bool = False) -> nn.Module:
    """The detector of the module docstring.  ``backbone``: ``bnn`` | ``xnor`` | ``bwn`` |
    ``twn`` | ``dorefa:W,A,G`` | ``float``; ``width`` 8..64 (``detect train``'s default 48);
    ``stride`` 4, 8 or 16; ``blocks`` stride-1 blocks per stage (an int for every stage, or
    one count per stage: ``"1,2,2"``); ``head`` / ``stem`` ``"float"`` (default) or
    ``"quant"``; ``head_channels`` of the head's 3x3 conv (0: the backbone's last width);
    ``stem_pool``: a MaxPool2d(2) after the stem conv (stem at stride 4: no binary stage at
    stride 2, where few channels make binary convs least efficient).  The model carries
    ``detector_args`` (all arguments), ``lowbit_spec`` (builder name + those arguments, for
    checkpoints) and ``stride`` / ``num_classes`` attributes."""
    b = _check_backbone(backbone)
    if int(stride) not in STRIDES:
        raise ValueError(f"stride: expected one of {STRIDES}, got {stride!r}")
    stem_pool = bool(stem_pool)
    fpn = bool(fpn)
    if fpn and int(stride) == max(STRIDES):
        raise ValueError(f"stride: fpn needs a stride below {max(STRIDES)}, got {stride!r}")
    stages = int(math.log2(int(stride))) - (1 if stem_pool else 0) + (1 if fpn else 0)
    spec_blocks, counts = _parse_blocks(blocks, stages)
    args = dict(backbone=b, in_channels=int(in_channels), num_classes=int(num_classes),
                width=int(width), stride=int(stride), head=head, stem=stem, blocks=spec_blocks,
                head_channels=int(head_channels), stem_pool=stem_pool, fpn=fpn)
    for key in ("in_channels", "num_classes", "width"):
        if args[key] < 1:
            raise ValueError(f"{key}: expected a positive integer, got {args[key]}")
    if spec_blocks is None or args["head_channels"] < 0:
        raise ValueError("blocks and head_channels must be >= 0")
    for key in ("head", "stem"):
        if args[key] not in ("float", "quant"):
            raise ValueError(f"{key}: expected 'float' or 'quant', got {args[key]!r}")
    last = args["width"] * 2 ** (stages - 1)
    model = DetectorNet(args["in_channels"], args["num_classes"], args["width"], args["stride"],
                        counts, args["head_channels"] or last,
                        binary_stem_act=b not in _FLOAT_INPUT, preact=b in _FLOAT_INPUT,
                        stem_pool=stem_pool, fpn=fpn)
    if b != "float":
        skip = ["head.heatmap", "head.size", "head.offset"]
        skip += [n for n, m in model.named_modules() if n.endswith(".down.conv")]
        skip += ["stem.conv"] if stem == "float" else []
        skip += ["head.conv"] if head == "float" else []
        quantize(model, b, keep_first=False, keep_last=False, skip=skip, inplace=True)
        if stem == "quant":   # the image is the stem's input: quantize its weights only
            model.stem.conv.input_quantizer = None
            model.stem.conv.pad_value = 0.0
    model.detector_args = args
    model.lowbit_spec = {"name": DETECTOR, "kwargs": dict(args)}
    return model


def detector_spec(model: nn.Module) -> dict:
    """``{"name", "kwargs"}`` of a model built by :func:`build_detector`, with *all* its
    arguments (so a checkpoint rebuilds it even if the builder's defaults change)."""
    args = getattr(model, "detector_args", None)
    if not isinstance(args, dict):
        raise ValueError("model: expected a detector built by lowbit.train.detector."
                         "build_detector")
    return {"name": DETECTOR, "kwargs": dict(args)}


def out_size(input_hw, stride: int) -> tuple[int, int]:
    """The output grid (h, w) of an input (H, W); both must be divisible by ``stride``."""
    H, W = (int(v) for v in input_hw)
    if H % stride or W % stride or H < stride or W < stride:
        raise ValueError(f"input size {W}x{H}: width and height must be positive multiples "
                         f"of the stride {stride}")
    return H // stride, W // stride
