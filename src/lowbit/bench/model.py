"""``lowbit bench model FILE --batch 1 --json PATH``: whole-model latency of the runtime vs the
same architecture in PyTorch fp32 eager, 1 thread.

The torch baseline is the model file's float twin built from its graph: every quantized layer
becomes ``nn.Conv2d`` / ``nn.Linear`` of the same shape, folded sign(BatchNorm) stages become
``BatchNorm`` + ``Hardtanh`` (BNN's float activation), pools stay where they are; random
weights (speed does not depend on values), eval mode, ``torch.inference_mode``, NCHW.
lowbit: ``Runtime(FILE, threads=1).logits`` on uint8 images (normalisation included).

Timing: warm-up, then repeats of the two interleaved (ABBA), each repeat the mean of
``--inner`` consecutive calls (default 20); medians of wall time and of thread CPU time (robust to a busy machine).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lowbit.bench.bgemm import _load, cpu_name
from lowbit.runtime import bitconv


def float_twin(graph: dict, input_shape):
    """nn.Sequential fp32 with the shapes of ``graph``'s ops (torch imported here only)."""
    from torch import nn
    mods: list = []
    shape = list(input_shape)                     # (C, H, W) or (F,)

    def bn(c):
        return nn.BatchNorm2d(c) if len(shape) == 3 else nn.BatchNorm1d(c)

    def out_hw(h, k, s, p):
        return (h + 2 * p - k) // s + 1

    for op in graph["ops"]:
        kind = op["op"]
        if kind in ("qconv2d", "qdense") and op["in"] in ("sign", "xnor") and mods \
                and not isinstance(mods[-1], nn.Hardtanh):
            mods.append(nn.Hardtanh())                   # the float twin of the sign
        if kind == "qconv2d":
            kh, kw = op["kernel"]
            mods.append(nn.Conv2d(op["in_channels"], op["out_channels"], (kh, kw), op["stride"],
                                  op["padding"], bias="bias" in op))
            shape = [op["out_channels"], out_hw(shape[1], kh, op["stride"][0], op["padding"][0]),
                     out_hw(shape[2], kw, op["stride"][1], op["padding"][1])]
        elif kind == "qdense":
            if len(shape) > 1:
                mods.append(nn.Flatten())
            fin = int(np.prod(shape))
            mods.append(nn.Linear(fin, op["out_channels"], bias="bias" in op))
            shape = [op["out_channels"]]
        elif kind in ("conv2d", "dense"):
            raise ValueError("bench model: float conv2d/dense ops need their tensors; use a "
                             "model file exported from a recipe")
        elif kind == "maxpool2d":
            mods.append(nn.MaxPool2d(op["kernel"], op["stride"]))
            shape = [shape[0]] + [out_hw(shape[1 + i], op["kernel"][i], op["stride"][i], 0)
                                  for i in range(2)]
        elif kind == "batchnorm":
            mods.append(bn(shape[0]))
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "sign":
            mods.append(nn.Hardtanh())
        elif kind == "flatten":
            mods.append(nn.Flatten())
            shape = [int(np.prod(shape))]
        if kind in ("qconv2d", "qdense") and op.get("out") == "bits":
            if op.get("pool"):
                p = op["pool"]
                mods.append(nn.MaxPool2d(p["kernel"], p["stride"]))
                shape = [shape[0]] + [out_hw(shape[1 + i], p["kernel"][i], p["stride"][i], 0)
                                      for i in range(2)]
            mods += [bn(shape[0]), nn.Hardtanh()]
    return nn.Sequential(*mods).eval()


def _timed(fn, inner: int) -> tuple[float, float]:
    c0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner, (time.thread_time() - c0) / inner


def bench(path: str, batch: int = 1, repeats: int = 11, inner: int = 20, threads: int = 1) -> dict:
    import torch
    from lowbit.runtime.graph import Runtime
    rt = Runtime(path, threads)
    shape = rt.graph.get("input", {}).get("shape", [1, 28, 28])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch,) + tuple(shape[1:]), dtype=np.uint8)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        twin = float_twin(rt.graph, shape)
        xt = torch.from_numpy(rt._input(images).copy())
        with torch.inference_mode():
            def tcall():
                twin(xt)

            def lcall():
                rt.logits(images)
            for _ in range(3):
                lcall()
                tcall()
            lw, lc, tw, tc = [], [], [], []
            for r in range(repeats):
                order = (lcall, tcall) if r % 2 == 0 else (tcall, lcall)
                for fn in order:
                    w, c = _timed(fn, inner)
                    (lw if fn is lcall else tw).append(w)
                    (lc if fn is lcall else tc).append(c)
    finally:
        torch.set_num_threads(old)
    med = lambda v: 1000 * statistics.median(v)
    res = {"file": str(path), "model": (rt.meta.get("model") or {}).get("name"),
           "batch": batch, "threads": threads, "repeats": repeats, "inner": inner,
           "lowbit_ms": med(lw), "torch_ms": med(tw), "speedup": med(tw) / med(lw),
           "lowbit_cpu_ms": med(lc), "torch_cpu_ms": med(tc), "speedup_cpu": med(tc) / med(lc),
           "kernel": bitconv.conv_kernel_name(), "cpu": cpu_name(), "load_average": _load(),
           "torch": torch.__version__}
    return res


def main(path: str, batch: int = 1, json_path: str | None = None, repeats: int = 11,
         inner: int = 20, threads: int = 1) -> int:
    try:
        r = bench(path, batch, repeats, inner, threads)
    except ImportError:
        print("lowbit bench model: the torch baseline needs torch", file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError) as e:
        print(f"lowbit bench model: error: {e}", file=sys.stderr)
        return 2
    print(f"{path} ({r['model']}), batch {batch}, {threads} thread(s), kernels {r['kernel']}: "
          f"lowbit {r['lowbit_ms']:.3f} ms, torch fp32 {r['torch_ms']:.3f} ms, speedup "
          f"{r['speedup']:.2f}x (CPU time: {r['lowbit_cpu_ms']:.3f} vs {r['torch_cpu_ms']:.3f} ms, "
          f"{r['speedup_cpu']:.2f}x); load average {r['load_average']}")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(r, indent=2) + "\n")
    return 0
