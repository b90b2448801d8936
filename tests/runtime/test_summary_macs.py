"""``lowbit summary`` MACs: a binary conv with a fused max-pool (its output is the pooled map)
still costs the MACs of every pre-pool output, so a BNN counts the MACs of its float twin."""
from __future__ import annotations

import torch

from lowbit.runtime.summary import file_summary
from lowbit.train.checkpoint import build_model
from lowbit.train.export import export_model

torch.set_num_threads(1)


def _summary(tmp_path, name, **kw):
    torch.manual_seed(0)
    export_model(build_model(name, **kw).eval(), tmp_path / f"{name}.lbm", None)
    return file_summary(tmp_path / f"{name}.lbm")


def test_fused_pool_conv_counts_pre_pool_macs(tmp_path):
    s = _summary(tmp_path, "bnn-lenet5")
    conv2 = next(r for r in s["rows"] if r["name"] == "conv2")
    assert conv2["output_shape"] == [50, 4, 4]          # the pooled map is the op's output
    assert conv2["macs"] == 50 * 8 * 8 * 20 * 5 * 5     # the conv computes 8x8 before the pool
    assert conv2["bops"] == conv2["macs"]
    f = _summary(tmp_path, "lenet5")                     # same layer shapes, all float
    assert s["totals"]["macs"] == f["totals"]["macs"] == 2_293_000


def test_vgg_small_macs(tmp_path):
    s = _summary(tmp_path, "bnn-vgg-small", width=0.25)
    c = [16, 16, 32, 32, 64, 64]
    convs = 28 * 28 * 1 * 9 * c[0] + 28 * 28 * 9 * c[0] * c[1] + 14 * 14 * 9 * (c[1] * c[2]
            + c[2] * c[3]) + 7 * 7 * 9 * (c[3] * c[4] + c[4] * c[5])
    assert s["totals"]["macs"] == convs + 9 * c[5] * 128 + 128 * 10
