"""The runtime's input matrix (issue: trustworthy at the edges): for each kind of input, does
``Runtime.predict`` give the same answer as the same pixels in uint8, or refuse with a clear
message?  A silent wrong answer is any other outcome.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/input_contract.py MODEL.lbm [--executor python]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from lowbit.runtime.graph import Runtime

CASES = {
    "uint8 (N, H, W)": (lambda p: p, {}),
    "uint8 (N, 1, H, W)": (lambda p: p[:, None], {}),
    "int64 pixels": (lambda p: p.astype(np.int64), {}),
    "int16 pixels": (lambda p: p.astype(np.int16), {}),
    "nested list": (lambda p: p.tolist(), {}),
    "float32 pixels 0..255": (lambda p: p.astype(np.float32), {}),
    "float32 pixels / 255": (lambda p: p.astype(np.float32) / 255, {}),
    "int64 with a 300": (lambda p: np.where(p == p.max(), 300, p.astype(np.int64)), {}),
    "negative ints": (lambda p: p.astype(np.int64) - 1, {}),
    "bool": (lambda p: p > 127, {}),
    "NaN (normalized=True)": (lambda p: np.full(p.shape, np.nan, np.float32), {"normalized": True}),
    "inf (normalized=True)": (lambda p: np.full(p.shape, np.inf, np.float32), {"normalized": True}),
    "wrong size": (lambda p: p[:, :-1], {}),
    "channels last (N, H, W, 3)": (lambda p: np.repeat(p[..., None], 3, -1), {}),
    "batch=0": (lambda p: p, {"batch": 0}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--executor", default=None)
    args = ap.parse_args()
    kw = {"executor": args.executor} if args.executor else {}
    rt = Runtime(args.model, **kw)
    shape = rt.inputs[0]["shape"]
    pixels = np.random.default_rng(0).integers(0, 256, (16, *shape[1:]) if shape[0] == 1
                                               else (16, *shape), dtype=np.uint8)
    want = rt.predict(pixels)
    silent = 0
    print("| input | outcome |\n|---|---|")
    for name, (make, extra) in CASES.items():
        try:
            got = rt.predict(make(pixels), **extra)
            ok = np.array_equal(got, want)
            outcome = "same answer as uint8" if ok else "**silent wrong answer**"
            silent += not ok
        except ValueError as e:
            outcome = f"refused: `{str(e).split(': ', 1)[-1][:90]}`"
        print(f"| {name} | {outcome} |")
    print(f"\nsilent wrong answers: {silent}")
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(main())
