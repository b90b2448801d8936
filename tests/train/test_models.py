"""The float reference models, the registry entries and the per-layer summary."""
import torch
from torch import nn

from lowbit.train import registry
from lowbit.train.checkpoint import build_model
from lowbit.train.summary import format_table, summarize


def test_registered_with_training_defaults():
    assert {"lenet300", "lenet5"} <= set(registry.names())
    for name in ("lenet300", "lenet5"):
        d = registry.get(name).defaults
        assert d["epochs"] > 0 and d["lr"] > 0 and d["optimizer"] == "adam"


def test_shapes_and_parameter_counts():
    # Deep Compression's table: LeNet-300-100 1070 KB, LeNet-5 1720 KB as float32.
    for name, params in (("lenet300", 266_610), ("lenet5", 431_080)):
        m = build_model(name)
        assert m.lowbit_spec == {"name": name, "kwargs": {}}
        assert sum(p.numel() for p in m.parameters()) == params
        assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert build_model("lenet5", num_classes=7)(torch.zeros(1, 1, 28, 28)).shape == (1, 7)


def test_lenet5_is_the_caffe_form():
    m = build_model("lenet5")
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 20, (5, 5), (0, 0)), (20, 50, (5, 5), (0, 0))]
    assert [(l.in_features, l.out_features) for l in m.modules() if isinstance(l, nn.Linear)] == [
        (800, 500), (500, 10)]


def test_summary_counts():
    s = summarize(build_model("lenet5"))
    by = {r.name: r for r in s.rows}
    assert by["conv1"].macs == 20 * 24 * 24 * 25 and by["conv1"].output_shape == (1, 20, 24, 24)
    assert by["conv2"].macs == 50 * 8 * 8 * 20 * 25
    assert by["fc1"].macs == 800 * 500 and by["fc2"].macs == 5000
    assert s.params == 431_080 and s.bytes_fp32 == 4 * 431_080 and s.macs == 2_293_000
    s300 = summarize(build_model("lenet300"))
    assert s300.macs == 784 * 300 + 300 * 100 + 100 * 10 and s300.bytes_fp32 == 1_066_440
    table = format_table(s)
    assert "431,080" in table and "2,293,000" in table and "bits" not in table


def test_summary_reads_bits_and_own_macs():
    m = build_model("lenet300")
    m.fc2.weight_bits = 1                    # as a binary layer would declare
    m.fc3.macs = lambda inp, out: 7          # a layer reporting its own cost
    s = summarize(m)
    fc2 = next(r for r in s.rows if r.name == "fc2")
    assert fc2.bits == 1 and fc2.packed_bytes == (30_000 + 7) // 8 + 4 * 100
    assert next(r for r in s.rows if r.name == "fc3").macs == 7
    assert s.packed_bytes == s.bytes_fp32 - 4 * 30_000 + fc2.packed_bytes - 400
    assert "packed bytes" in format_table(s)
