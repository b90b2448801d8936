"""Regenerate the fuzzing seed corpus (fuzz/corpus/*.lbm): small model files, one per kind of
content the loader must parse.  Deterministic (seeded); needs torch.

    .venv/bin/python fuzz/make_corpus.py            # rewrites fuzz/corpus/

Seeds (a few KB to ~30 KB each, < 200 KB in all):
  bnn-lenet5.lbm           BNN LeNet-5 at width 0.25: float conv, packed binary weights, folded
                           sign(BN) thresholds with max pool, spatial binary dense, float BN
  bnn-lenet5-bitplane.lbm  the same with BNN Algorithm 4's bit-plane first layer (uint8 input)
  quant-mixed.lbm          ternary conv, XNOR conv (K scaling), DoReFa 2-bit weights x 2-bit
                           activations, five-level weights, act_quant, prelu, 3-channel input
  float-mixed.lbm          float conv / BN / relu / hardtanh / avg + max pool / upsample /
                           add / concat / global average pool / dense, per-channel RGB input
  dc-mlp.lbm               Deep Compression MLP 784-48-24-10: sparse + codebook + Huffman,
                           dense store + packed indices, pruned-only float16 values, f16 bias
  v1-bnn-lenet5.lbm        a graph-version-1 file (tests/fixtures), upgraded at load
"""
from __future__ import annotations

import shutil
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lowbit import codec
from lowbit.train import quantizers as Q
from lowbit.train.export import export_model
from lowbit.train.layers import QuantConv2d, QuantLinear
from lowbit.train.recipes import bnn_lenet5

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _norm(channels: int) -> dict:
    if channels == 1:
        return {"mean": 0.2860, "std": 0.3530, "scale": 255.0}
    return {"mean": [0.49, 0.48, 0.45][:channels], "std": [0.25, 0.24, 0.26][:channels],
            "scale": 255.0}


def _settle(model: nn.Module, shape: tuple, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and weights: a few train-mode passes on noise."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.momentum = 0.5
                m.weight.uniform_(-1.0, 1.0, generator=g)   # some gamma < 0: flipped thresholds
                m.bias.uniform_(-0.3, 0.3, generator=g)
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.0, 0.5, generator=g)
        for _ in range(4):
            model(torch.randn((16,) + shape, generator=g))
    return model.eval()


class FloatMixed(nn.Module):
    """Every float op of the graph schema on a 3x16x16 input."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)
        self.conv3 = nn.Conv2d(16, 12, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.act = nn.Hardtanh(-0.5, 0.5)
        self.prelu = nn.PReLU(12)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12 + 12 * 4 * 4, 10)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        b = self.conv2(a) + a                           # add
        c = torch.cat([self.pool(b), self.avg(self.pool(a))], 1)   # concat
        d = self.prelu(self.conv3(c))                   # 12 x 4 x 4
        e = self.act(self.up(d))                        # 12 x 8 x 8
        f = torch.flatten(self.gap(e), 1)
        return self.fc(torch.cat([f, torch.flatten(self.pool(e), 1)], 1))


def quant_mixed() -> nn.Module:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 16, 3, padding=1)), ("bn1", nn.BatchNorm2d(16)),
        ("tern", QuantConv2d(16, 16, 3, padding=1, bias=False,
                             weight_quantizer=Q.Ternary(per_channel=True),
                             input_quantizer=Q.get("ste_sign"))),
        ("bn2", nn.BatchNorm2d(16)), ("pool1", nn.MaxPool2d(2)),
        ("xnor", QuantConv2d(16, 24, 3, padding=1, bias=False,
                             weight_quantizer=Q.BinaryWeight(), input_quantizer=Q.XnorSign())),
        ("bn3", nn.BatchNorm2d(24)), ("prelu", nn.PReLU()),
        ("dorefa", QuantConv2d(24, 16, 3, stride=2, bias=False,
                               weight_quantizer=Q.DorefaWeight(2),
                               input_quantizer=Q.DorefaActivation(2))),
        ("bn4", nn.BatchNorm2d(16)), ("flatten", nn.Flatten()),
        ("five", QuantLinear(16 * 2 * 2, 32, weight_quantizer=Q.FiveLevel(),
                             input_quantizer=Q.DorefaActivation(3))),
        ("bn5", nn.BatchNorm1d(32)),
        ("fc", QuantLinear(32, 10, input_quantizer=Q.get("ste_sign"))),
    ]))


def _mlp() -> nn.Module:
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(784, 48)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(48, 24)), ("relu2", nn.ReLU()), ("fc3", nn.Linear(24, 10))]))


def dc_mlp(path: Path) -> None:
    """A Deep-Compression file: the MLP's weights pruned and shared, re-encoded as "dc"."""
    torch.manual_seed(3)
    model = _mlp().eval()
    export_model(model, path, _norm(1), input_shape=(1, 28, 28))
    mf = codec.load(path)
    rng = np.random.default_rng(3)
    tensors = {}
    for name in mf.entries:
        w = mf.tensor(name).astype(np.float32)
        if name == "fc1.weight":        # 90% pruned, 16 shared values, Huffman index + values
            book = np.linspace(-0.04, 0.04, 16, dtype=np.float32)
            keep = rng.random(w.shape) < 0.1
            q = np.where(keep, book[np.abs(w[..., None] - book).argmin(-1)], 0).astype(np.float32)
            q[q == 0] = 0.0
            tensors[name] = codec.model.dc(q, codebook=book[book != 0], index_bits=5,
                                           huffman_index=True, huffman_values=True,
                                           store="sparse")
        elif name == "fc2.weight":      # dense store, 8 values incl. 0, packed indices
            book = np.linspace(-0.15, 0.15, 7, dtype=np.float32)
            q = book[np.abs(w[..., None] - book).argmin(-1)].astype(np.float32)
            tensors[name] = codec.model.dc(q, codebook=book, store="dense")
        elif name == "fc3.weight":      # pruned only: raw float16 values, packed 4-bit gaps
            q = np.where(rng.random(w.shape) < 0.5, w, 0).astype(np.float16).astype(np.float32)
            tensors[name] = codec.model.dc(q, index_bits=4, value_dtype="f2", store="sparse")
        elif name == "fc1.bias":
            tensors[name] = codec.model.raw(w.astype(np.float16))
        else:
            tensors[name] = codec.model.raw(w)
    codec.save(path, mf.graph, tensors, {"model": "dc-mlp", "note": "fuzzing seed"})


def main(out: Path = HERE / "corpus") -> int:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    m = _settle(bnn_lenet5(width=0.25), (1, 28, 28), 1)
    export_model(m, out / "bnn-lenet5.lbm", _norm(1), {"model": "bnn-lenet5"}, (1, 28, 28))
    torch.manual_seed(1)
    m = _settle(bnn_lenet5(width=0.25, first_layer="bitplane"), (1, 28, 28), 2)
    export_model(m, out / "bnn-lenet5-bitplane.lbm", _norm(1), {}, (1, 28, 28))
    torch.manual_seed(2)
    m = _settle(quant_mixed(), (3, 12, 12), 3)
    export_model(m, out / "quant-mixed.lbm", _norm(3), {}, (3, 12, 12))
    torch.manual_seed(4)
    m = _settle(FloatMixed(), (3, 16, 16), 4)
    export_model(m, out / "float-mixed.lbm", _norm(3), {}, (3, 16, 16))
    dc_mlp(out / "dc-mlp.lbm")
    shutil.copyfile(ROOT / "tests" / "fixtures" / "v1-bnn-lenet5.lbm", out / "v1-bnn-lenet5.lbm")
    total = 0
    for p in sorted(out.glob("*.lbm")):
        total += p.stat().st_size
        print(f"{p.name:28s} {p.stat().st_size:7d} bytes")
    print(f"{'total':28s} {total:7d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
