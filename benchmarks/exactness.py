"""Runtime == torch eval on the whole Fashion-MNIST test set (10 000 images): every recipe
(random weights, random BatchNorm statistics with negative gammas and exact ties, as in
tests/runtime/test_export.py) and the three models defined only in tests/runtime/test_dag.py.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exactness.py [--json PATH]
        [--checkpoint CKPT ...] [--checkpoints-only] [--executor native|python]

Prints, per model, how many of the 10 000 predictions differ, the largest float difference
relative to the image's largest logit, and on how many images it exceeds 1e-5 (a float first
layer computed in another summation order can flip a sign(BN) or a rounding at an exact tie).  Trained checkpoints can be added with --checkpoint (repeatable).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

from test_dag import NORM1, NORM3, ResidualBinary, RGBNet, _float_bn_net, _fmnist  # noqa: E402
from test_export import CASES, NORM, randomize_bn  # noqa: E402

from lowbit.runtime.graph import Runtime  # noqa: E402
from lowbit.train.checkpoint import build_model, load_model  # noqa: E402
from lowbit.train.export import export_model  # noqa: E402


def compare(model, images, norm, shape, tmp, executor=None) -> dict:
    model.eval()
    path = Path(tmp) / "m.lbm"
    export_model(model, path, norm, input_shape=shape)
    mean = np.asarray(norm["mean"], np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(norm["std"], np.float64).reshape(1, -1, 1, 1)
    x = ((images / 255.0 - mean) / std).astype(np.float32)
    rt = Runtime(path, executor=executor)
    ref, out = [], []
    with torch.no_grad():
        for s in range(0, len(x), 1000):
            ref.append(model(torch.from_numpy(x[s:s + 1000])).numpy())
            out.append(rt.logits(images[s:s + 1000]))
    ref, out = np.concatenate(ref), np.concatenate(out)
    scale = np.maximum(1.0, np.abs(ref).max(axis=1))
    per_image = np.abs(out - ref).max(axis=1) / scale
    return {"images": len(images), "mismatches": int((out.argmax(1) != ref.argmax(1)).sum()),
            "max_rel_diff": float(per_image.max()),
            "images_over_1e-5": int((per_image > 1e-5).sum())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--checkpoint", action="append", default=[],
                    help="a trained checkpoint to compare as well (repeatable)")
    ap.add_argument("--checkpoints-only", action="store_true",
                    help="only the --checkpoint models, not the recipes and test models")
    ap.add_argument("--executor", choices=["native", "python"], default=None,
                    help="the runtime's executor (default: native when built)")
    args = ap.parse_args()
    ex = args.executor
    torch.set_num_threads(1)
    gray = _fmnist(10000)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in ([] if args.checkpoints_only else CASES):
            torch.manual_seed(0)
            m = build_model(name, **kw)
            randomize_bn(m)
            rows[f"{name} {kw or ''}".strip()] = compare(m, gray, NORM, (1, 28, 28), tmp, ex)
            print(list(rows.items())[-1], flush=True)
        for label, make, norm, c, size in [("test: residual binary", ResidualBinary, NORM1, 1, 28),
                                           ("test: RGB 3x32x32", RGBNet, NORM3, 3, 32),
                                           ("test: float + BN", _float_bn_net, NORM1, 1, 28)
                                           ] if not args.checkpoints_only else []:
            torch.manual_seed(0)
            m = make()
            randomize_bn(m)
            rows[label] = compare(m, _fmnist(10000, c, size), norm, (c, size, size), tmp, ex)
            print(list(rows.items())[-1], flush=True)
        for ck in args.checkpoint:
            m, meta = load_model(ck)
            shape = tuple(meta.get("input_shape") or (1, 28, 28))
            rows[f"trained: {ck}"] = compare(m, gray, meta["normalization"].to_dict(), shape, tmp,
                                             ex)
            print(list(rows.items())[-1], flush=True)
    bad = sum(r["mismatches"] for r in rows.values())
    print(f"{len(rows)} models x 10000 images: {bad} predictions differ")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
