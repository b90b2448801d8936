"""``lowbit bench model``: JSON keys and a sane float twin (tiny settings, not a speed test)."""
import json

import torch

from lowbit.bench.model import float_twin, main
from lowbit.train.checkpoint import build_model
from lowbit.train.export import export_model


def test_bench_model_json(tmp_path):
    torch.manual_seed(0)
    export_model(build_model("bnn-vgg-small", width=0.25).eval(), tmp_path / "v.lbm",
                 {"mean": 0.286, "std": 0.353})
    assert main(str(tmp_path / "v.lbm"), 1, str(tmp_path / "b.json"), repeats=1, inner=1) == 0
    r = json.loads((tmp_path / "b.json").read_text())
    for k in ("lowbit_ms", "torch_ms", "speedup"):
        assert r[k] > 0
    assert abs(r["speedup"] - r["torch_ms"] / r["lowbit_ms"]) < 1e-9


def test_float_twin_has_the_same_shapes(tmp_path):
    export_model(build_model("bnn-lenet5").eval(), tmp_path / "l.lbm", None)
    from lowbit import codec
    twin = float_twin(codec.load(tmp_path / "l.lbm").graph, [1, 28, 28])
    with torch.no_grad():
        assert twin(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    n = sum(p.numel() for m in twin if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
            for p in [m.weight])
    ref = build_model("bnn-lenet5")
    assert n == sum(m.weight.numel() for m in ref.modules()
                    if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
