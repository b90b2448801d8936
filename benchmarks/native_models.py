"""The four model files of the native-executor benchmarks (docs/results.md, "Native graph
executor"): bnn-lenet5, lenet5, a Deep-Compression lenet5 (float graph, 'dc' tensors: 60 %
of conv and 90 % of fc weights pruned, Huffman-coded indices) and bnn-vgg-small, random init
(speed does not depend on the values), written to OUT (default runs/native).

    .venv/bin/python benchmarks/native_models.py [OUT]
    OMP_NUM_THREADS=1 lowbit bench model runs/native/bnn-lenet5.lbm --batch 1,64 --repeats 41 --systems ort-int8
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from lowbit import codec
from lowbit.train.checkpoint import build_model
from lowbit.train.export import build_graph, export_model

NORM = {"mean": 0.2860406, "std": 0.3530242, "scale": 255.0}


def main(out: str = "runs/native") -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    for name in ("bnn-lenet5", "lenet5", "bnn-vgg-small"):
        torch.manual_seed(0)
        export_model(build_model(name).eval(), f"{out}/{name}.lbm", NORM)
    torch.manual_seed(0)
    m = build_model("lenet5").eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.ndim > 1:
                p[p.abs() < p.abs().quantile(0.9 if "fc" in n else 0.6)] = 0.0
    graph, tensors = build_graph(m, NORM)
    tensors = {k: (codec.model.dc(t.data, huffman_index=True) if t.data.ndim >= 2 else t)
               for k, t in tensors.items()}
    codec.save(f"{out}/dc-lenet5.lbm", graph, tensors, {"model": {"name": "lenet5", "kwargs": {}}})
    print(f"wrote {out}/{{bnn-lenet5,lenet5,dc-lenet5,bnn-vgg-small}}.lbm")


if __name__ == "__main__":
    main(*sys.argv[1:2])
