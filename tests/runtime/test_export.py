"""Exported models run in the torch-free runtime exactly as torch's eval mode computes them.

For every recipe (random init, random BatchNorm statistics with negative gammas and exact ties,
eval mode): predictions equal, every bitwise layer's integer accumulators identical, float
outputs within 1e-5 relative.  Also: trained checkpoints ($LOWBIT_CHECKPOINTS) on real images,
Deep-Compression files, resident packed-weight memory, the CLI.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit.data import Normalization
from lowbit.runtime.graph import Runtime
from lowbit.train.checkpoint import build_model
from lowbit.train.export import export_model
from lowbit.train.layers import quant_layers

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
NORM = {"mean": 0.2860406, "std": 0.3530242, "scale": 255.0}

CASES = [
    ("bnn-mlp", dict(hidden=96)),
    ("bnn-mlp", dict(hidden=130, first_layer="bitplane")),
    ("bnn-lenet5", {}),
    ("bnn-lenet5", dict(first_layer="bitplane")),
    ("xnor-lenet5", {}),
    ("xnor-lenet5", dict(order="CBAP")),
    ("bwn-lenet5", {}),
    ("twn-lenet5", {}),
    ("twn-lenet5", dict(levels=5)),
    ("dorefa-lenet5", {}),
    ("dorefa-lenet5", dict(bits="2,2,32")),
    ("dorefa-lenet5", dict(bits="4,3,32")),
    ("dorefa-lenet5", dict(bits="2,16,32")),
    ("bnn-vgg-small", dict(width=0.5)),
    ("bnn-vgg-small", dict(width=0.5, first_layer="bitplane")),
    ("lenet5", {}),
    ("lenet300", {}),
]
# layers that must run on the bitwise kernels (not the float path)
BITWISE = {"bnn-mlp": {"fc2", "fc3"}, "bnn-lenet5": {"conv2", "fc1"},
           "xnor-lenet5": {"conv2", "fc1"}, "dorefa-lenet5": {"conv2", "fc1"},
           "bnn-vgg-small": {"conv2", "conv3", "conv4", "conv5", "conv6", "fc1"}}


def randomize_bn(model: torch.nn.Module, seed: int = 1) -> None:
    """Nontrivial thresholds: random gamma (a quarter negative, one zero), beta, running stats;
    in a third of the channels beta = 0 and an integer mean, so that BN(acc) = 0 exactly for
    some accumulators (ties must give +1)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
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


def torch_accumulators(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Integer accumulators round(conv(Xl, Wl)) of every integer quantized layer."""
    acc, hooks = {}, []
    for name, layer in quant_layers(model):
        if not layer.integer_accumulator:
            continue

        def hook(mod, inp, name=name):
            xl, _ = mod.input_quantizer.split(inp[0])
            wl, _ = mod.weight_quantizer.split(mod.weight)
            acc[name] = torch.round(mod._op(xl, wl)).detach().numpy()
        hooks.append(layer.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return acc


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    try:
        from lowbit.data import load
        real = load("test")[0][:12]
        imgs = np.concatenate([imgs, real])
    except Exception:  # data absent: random images only
        pass
    return imgs


def check_exact(model, path, images, bitwise=()):
    rt = Runtime(path)
    x = Normalization.from_dict(NORM).apply(images)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    rec: dict = {}
    out = rt.logits(images, record=rec)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    acc = torch_accumulators(model, torch.from_numpy(x))
    for name in bitwise:
        assert name in rec, f"{name} did not run on the bitwise kernels"
    for name, a in rec.items():
        np.testing.assert_array_equal(a, acc[name].astype(np.int64), err_msg=name)
    # two kernel threads (and two BLAS threads for the float layers): the same answers
    rec2: dict = {}
    out2 = Runtime(path, threads=2).logits(images, record=rec2)
    np.testing.assert_array_equal(out2.argmax(1), out.argmax(1))
    assert np.abs(out2 - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    for name, a in rec.items():
        np.testing.assert_array_equal(rec2[name], a, err_msg=f"{name}, 2 threads")
    assert set(bitwise) <= set(rec)
    np.testing.assert_array_equal(rt.predict(images), ref.argmax(1))
    return rt, rec


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{k}" if k else n for n, k in CASES])
def test_export_matches_torch(name, kwargs, images, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    randomize_bn(model)
    model.eval()
    path = tmp_path / "m.lbm"
    export_model(model, path, NORM)
    bitwise = set(BITWISE.get(name, ()))
    if name == "dorefa-lenet5" and kwargs.get("bits", "1,2,6").split(",")[1] == "16":
        bitwise = set()                       # 16-bit activations: float path
    if kwargs.get("first_layer") == "bitplane":
        bitwise |= {"fc1" if name == "bnn-mlp" else "conv1"}
    check_exact(model, path, images, bitwise)


def test_binary_layers_exchange_packed_bits(tmp_path):
    """bnn-vgg-small: BN + sign folded into thresholds, no batchnorm between binary layers."""
    model = build_model("bnn-vgg-small", width=0.5).eval()
    export_model(model, tmp_path / "v.lbm", NORM)
    rt = Runtime(tmp_path / "v.lbm")
    kinds = [(op["op"], op.get("out")) for op in rt.ops]
    assert [o for o in rt.ops if o["op"] == "batchnorm"] == [rt.ops[1], rt.ops[-1]]
    assert sum(1 for k in kinds if k == ("qconv2d", "bits")) == 5
    assert {rt.layers[n].kind for n in BITWISE["bnn-vgg-small"]} == {"binary"}


def test_float_threshold_exact():
    from lowbit.runtime.ops import batchnorm, fold_float_threshold, threshold_bits
    rng = np.random.default_rng(3)
    c = 40
    gamma = rng.normal(size=c).astype(np.float32)
    gamma[:3] = 0
    beta = rng.normal(size=c).astype(np.float32)
    beta[5:10] = 0
    mean = rng.normal(size=c).astype(np.float32)
    var = rng.uniform(0.1, 4, size=c).astype(np.float32)
    t, s = fold_float_threshold(gamma, beta, mean, var, 1e-5)
    fin = np.isfinite(t)
    near = np.stack([np.nextafter(t, -np.inf), t, np.nextafter(t, np.inf)])[:, fin]
    x = rng.normal(size=(500, c)).astype(np.float32) * 3
    x = np.concatenate([x, np.zeros((1, c), np.float32), -np.zeros((1, c), np.float32)])
    want = batchnorm(x, gamma, beta, mean, var, 1e-5) >= 0
    got = np.unpackbits(threshold_bits(x, t, s).words[:, 0, 0].view(np.uint8), axis=1,
                        bitorder="little")[:, :c].astype(bool)
    np.testing.assert_array_equal(got, want)
    xs = np.tile(mean, (3, 1))
    xs[:, fin] = near
    want = batchnorm(xs, gamma, beta, mean, var, 1e-5) >= 0
    got = np.unpackbits(threshold_bits(xs, t, s).words[:, 0, 0].view(np.uint8), axis=1,
                        bitorder="little")[:, :c].astype(bool)
    np.testing.assert_array_equal(got, want)


def test_binary_weight_memory_is_1_32(tmp_path):
    """Binary layers of bnn-vgg-small: resident packed weights = fp32 / 32 (+-5%) on the word
    layouts (portable, popcnt) and on the default kernel of this CPU (the avx2 nibble-LUT conv
    kernel keeps 1 bit per weight resident and expands its nibble layout per cache block)."""
    model = build_model("bnn-vgg-small").eval()
    export_model(model, tmp_path / "v.lbm", NORM)
    from lowbit.runtime import bitconv, kernels
    variant = "popcnt-2x4" if "popcnt-2x4" in bitconv.xconv_variants(kernels.default_path()) else None
    kernel = None if variant else "portable"
    if kernel and "portable" not in kernels.available_paths():
        pytest.skip("no compiled kernels")
    rt = Runtime(tmp_path / "v.lbm", kernel=kernel, variant=variant)
    sd = dict(model.named_modules())
    for name in BITWISE["bnn-vgg-small"]:
        fp32 = sd[name].weight.numel() * 4
        ratio = rt.layers[name].weight_bytes() / fp32
        assert abs(ratio * 32 - 1) <= 0.05, (name, ratio)
    rt2 = Runtime(tmp_path / "v.lbm")                       # default kernel + variant
    for name in BITWISE["bnn-vgg-small"]:
        ratio = rt2.layers[name].weight_bytes() / (sd[name].weight.numel() * 4)
        assert abs(ratio * 32 - 1) <= 0.05, (name, rt2.layers[name].pw.kernel, ratio)


def _checkpoints():
    """Trained checkpoints to check, opt-in: ``LOWBIT_CHECKPOINTS="runs/*/checkpoint.pt"``
    (a glob; tests never read an untracked folder on their own)."""
    pattern = os.environ.get("LOWBIT_CHECKPOINTS")
    return sorted(glob.glob(pattern))[:8] if pattern else []


@pytest.mark.parametrize("ckpt", _checkpoints() or [None])
def test_trained_checkpoint_real_images(ckpt, tmp_path):
    if ckpt is None:
        pytest.skip("no trained checkpoints given ($LOWBIT_CHECKPOINTS, a glob)")
    from lowbit.data import load
    from lowbit.train.checkpoint import CheckpointError, load_model
    try:
        model, meta = load_model(ckpt)
    except CheckpointError as e:   # a run still being written by another job
        pytest.skip(f"{ckpt}: {e}")
    shape = tuple(meta.get("input_shape") or (1, 28, 28))
    if shape != (1, 28, 28):       # e.g. a detector's run: not a Fashion-MNIST classifier
        pytest.skip(f"{ckpt}: input shape {shape}, the test images are 1x28x28")
    norm = meta["normalization"]
    images = load("test")[0][:300]
    export_model(model, tmp_path / "t.lbm", norm.to_dict() if norm else None)
    rt = Runtime(tmp_path / "t.lbm")
    x = norm.apply(images) if norm else images[:, None].astype(np.float32) / 255
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = rt.logits(images)
    np.testing.assert_array_equal(out.argmax(1), ref.argmax(1))
    # a float first layer feeding sign(BN) can flip a bit at an exact tie (summation order,
    # docs/robustness.md): such images may differ in their logits, never most of them
    per_image = np.abs(out - ref).max(axis=1) / np.maximum(1.0, np.abs(ref).max(axis=1))
    assert (per_image > 1e-5).mean() <= 0.01, (per_image > 1e-5).sum()


def test_deep_compression_file_runs(tmp_path):
    """A float graph with Deep-Compression ('dc') tensors: decoded to dense float32 at load."""
    from lowbit import codec
    from lowbit.runtime.float_ops import predict
    from lowbit.train.export import build_graph
    torch.manual_seed(0)
    model = build_model("lenet300").eval()
    with torch.no_grad():
        for p in model.parameters():
            p[p.abs() < p.abs().median()] = 0.0            # pruned, no sharing
    graph, tensors = build_graph(model, NORM)
    tensors = {k: (codec.model.dc(t.data) if t.data.ndim == 2 else t) for k, t in tensors.items()}
    codec.save(tmp_path / "dc.lbm", graph, tensors)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    rt = Runtime(tmp_path / "dc.lbm")
    x = Normalization.from_dict(NORM).apply(imgs)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(rt.predict(imgs), ref.argmax(1))
    np.testing.assert_array_equal(rt.predict(imgs), predict(codec.load(tmp_path / "dc.lbm"), imgs))


def test_cli_export_and_run(tmp_path):
    from lowbit.train.checkpoint import save_checkpoint
    torch.manual_seed(0)
    model = build_model("bnn-lenet5").eval()
    randomize_bn(model)
    save_checkpoint(tmp_path / "c.pt", model, normalization=NORM, with_rng=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    exe = [sys.executable, "-m", "lowbit.cli"]
    r = subprocess.run(exe + ["export", str(tmp_path / "c.pt"), str(tmp_path / "m.lbm")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(exe + ["run", str(tmp_path / "m.lbm"), "--limit", "100"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    r = subprocess.run(exe + ["export", str(tmp_path / "nope.pt"), str(tmp_path / "x.lbm")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "error" in r.stderr
