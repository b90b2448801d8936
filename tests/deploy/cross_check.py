"""make cross-test: lowbit-run cross-compiled for aarch64 (argv[1]), run under qemu (argv[2]),
on exported models of several recipes, on both aarch64 kernel paths (portable, neon), against
the Python runtime on this (x86) machine: predictions equal, logits bit for bit where the
graph is all-bitwise after the first layer and within 1e-5 where float layers sum in Eigen's
per-ISA order; and on aarch64 the neon path equal to the portable path bit for bit (the NEON
kernels are exact twins of the portable ones).  Exit 1 on any mismatch."""
from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from test_export import CASES, NORM, randomize_bn  # noqa: E402

from lowbit.runtime.graph import Runtime  # noqa: E402
from lowbit.train.checkpoint import build_model  # noqa: E402
from lowbit.train.export import export_model  # noqa: E402


def main() -> int:
    exe, qemu = sys.argv[1], shlex.split(sys.argv[2])
    torch.set_num_threads(1)
    imgs = np.random.default_rng(0).integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        np.save(d / "x.npy", imgs)
        for k, (name, kwargs) in enumerate(CASES):
            torch.manual_seed(k)
            m = build_model(name, **kwargs)
            randomize_bn(m, k)
            m.eval()
            export_model(m, d / "m.lbm", NORM)
            ref = Runtime(d / "m.lbm", kernel="portable").logits(imgs)
            outs = {}
            for path in ("portable", "neon"):
                r = subprocess.run(qemu + [exe, str(d / "m.lbm"), str(d / "x.npy"), "--quiet", "--kernel", path,
                                           "--out", str(d / "y.npy")], capture_output=True, text=True)
                if r.returncode:
                    print(f"{name} {kwargs} {path}: FAILED {r.stderr.strip()}")
                    bad += 1
                    continue
                got = np.load(d / "y.npy").reshape(ref.shape)
                outs[path] = got
                same = np.array_equal(got, ref)
                ok = np.allclose(got, ref, rtol=1e-5, atol=1e-5) and np.array_equal(got.argmax(1), ref.argmax(1))
                print(f"{name:14s} {str(kwargs):40s} aarch64/{path:8s} "
                      f"{'bit-exact' if same else f'max |diff| {np.abs(got - ref).max():.2e}'} "
                      f"{'ok' if ok else 'MISMATCH'}")
                bad += not ok
            if len(outs) == 2 and not np.array_equal(outs["portable"], outs["neon"]):
                # the NEON kernels are exact twins of the portable ones (tests/deploy/kernel_test.cpp)
                print(f"{name:14s} {str(kwargs):40s} aarch64 neon != portable: MISMATCH")
                bad += 1
    print("cross_check:", "OK" if not bad else f"{bad} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
