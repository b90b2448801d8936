"""Binary filter repetition: counts on hand-made weights, the summary section, and the opt-in
dedup executor == the normal one (bits and float outputs, pools, flips, dense layers)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.runtime import repetition as R
from lowbit.runtime.graph import Runtime
from lowbit.train.checkpoint import build_model
from lowbit.train.export import export_model
from lowbit.train.layers import QuantMixin

torch.set_num_threads(1)
NORM = {"mean": 0.2860406, "std": 0.3530242, "scale": 255.0}


def test_counts_on_hand_made_filters():
    a = np.ones((3, 3))
    b = a.copy()
    b[0, 0] = -1
    # 4 filters x 2 input channels, 3x3: f0 = [a, b], f1 = f0, f2 = -f0, f3 = [b, b]
    f0 = np.stack([a, b], axis=-1)                        # (KH, KW, C)
    f3 = np.stack([b, b], axis=-1)
    lv = np.stack([f0, f0, -f0, f3])                      # (OC, KH, KW, C)
    s = R.filter_stats(lv)
    assert s["filters"] == 4 and s["kernel"] == [3, 3] and s["possible_slices"] == 512
    assert s["unique_filters"] == 3 and s["unique_filters_sign"] == 2
    # channel 0: slices a, a, -a, b -> 3 unique (2 up to sign); channel 1: b, b, -b, b -> 2 (1)
    assert s["slices_unique_per_channel"] == pytest.approx((3 + 2) / 2 / 4)
    assert s["slices_unique_per_channel_sign"] == pytest.approx((2 + 1) / 2 / 4)
    assert s["slices"] == 8 and s["unique_slices"] == 4       # a, b, -a, -b
    with pytest.raises(ValueError, match="-1/\\+1"):
        R.filter_stats(np.zeros((2, 3, 3, 1)))


def _repeat_filters(model):
    """Every third binary conv filter equal to, every third the negation of, another one."""
    for _, m in model.named_modules():
        if isinstance(m, QuantMixin) and m.weight_quantizer is not None and m.weight.dim() == 4:
            with torch.no_grad():
                n = len(m.weight[1::3])
                m.weight[1::3] = m.weight[0::3][:n]
                m.weight[2::3] = -m.weight[0::3][:len(m.weight[2::3])]


@pytest.mark.parametrize("name,kwargs", [("bnn-lenet5", {}), ("bnn-vgg-small", dict(width=0.25)),
                                         ("bnn-mlp", dict(hidden=96)), ("xnor-lenet5", {}),
                                         ("bnn-lenet5", dict(first_layer="bitplane"))])
def test_dedup_executor_equals_the_normal_one(name, kwargs, tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_export import randomize_bn
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    randomize_bn(model)
    _repeat_filters(model)
    model.eval()
    path = tmp_path / "m.lbm"
    export_model(model, path, NORM)
    imgs = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    rec0: dict = {}
    out0 = Runtime(path, executor="python").logits(imgs, record=rec0)
    rt = Runtime(path)
    done = R.dedup(rt)
    assert rt.executor == "python" and done
    convs = [op["name"] for op in rt.ops if op["op"] == "qconv2d" and op["w_levels"] == "binary"
             and op["in"] in ("sign", "xnor")]
    for n in convs:                                   # a third unique up to sign
        oc, unique = done[n]
        assert unique == -(-oc // 3)
    rec: dict = {}
    out = rt.logits(imgs, record=rec)
    np.testing.assert_array_equal(out, out0)
    assert sorted(rec) == sorted(rec0)
    for k in rec0:
        np.testing.assert_array_equal(rec[k], rec0[k], err_msg=k)
    rows = R.file_repetition(path)                    # every conv with binary weights
    assert [r["name"] for r in rows] == [op["name"] for op in rt.ops if op["op"] == "qconv2d"
                                         and op["w_levels"] == "binary"]
    assert all(r["unique_filters_sign"] == -(-r["filters"] // 3) for r in rows)
    assert R.format_repetition(rows).startswith("filter repetition") == bool(rows)


def test_dedup_only_where_filters_repeat(tmp_path):
    torch.manual_seed(0)
    model = build_model("bnn-lenet5").eval()
    export_model(model, tmp_path / "m.lbm", NORM)
    rt = Runtime(tmp_path / "m.lbm")
    assert R.dedup(rt, max_unique_fraction=0.9) == {}          # random filters never repeat


def test_summary_prints_repetition(tmp_path, capsys):
    from lowbit.cli import main
    torch.manual_seed(0)
    model = build_model("bnn-vgg-small", width=0.25)
    _repeat_filters(model)
    export_model(model.eval(), tmp_path / "v.lbm", NORM)
    assert main(["summary", str(tmp_path / "v.lbm")]) == 0
    out = capsys.readouterr().out
    assert "filter repetition" in out and "conv2" in out and "of 512" in out
    assert main(["summary", "bnn-vgg-small", "--model-arg", "width=0.25"]) == 0
    out = capsys.readouterr().out                     # a model name: via a temporary export
    assert "filter repetition" in out and "estimated energy per inference" in out
