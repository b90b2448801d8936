"""Float GEMM of the native executor (Eigen, csrc/graph/fgemm.h) vs numpy's BLAS (OpenBLAS
in numpy's wheels), 1 thread, on the float products of LeNet-5 (im2col shapes of its convs,
its dense layers) and of the BNN models' float first layers, at batch 1 and 64.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/native_gemm.py

Interleaved rounds, median per shape; prints a Markdown table (docs/results.md).
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from lowbit.runtime import kernels as K

SHAPES = [  # (what, M, K, N, b_trans): out (M, N) = A (M, K) B
    ("lenet5 conv1 b1", 576, 25, 20, False), ("lenet5 conv2 b1", 64, 500, 50, False),
    ("lenet5 fc1 b1", 1, 800, 500, True), ("vgg-small conv1 b1", 784, 9, 64, False),
    ("lenet5 conv1 b64", 36864, 25, 20, False), ("lenet5 conv2 b64", 4096, 500, 50, False),
    ("lenet5 fc1 b64", 64, 800, 500, True)]


def main(rounds: int = 15) -> None:
    from threadpoolctl import threadpool_limits
    paths = [p for p in K.available_paths() if p != "ref"]
    rng = np.random.default_rng(0)
    print("| product (M x K x N) | numpy (OpenBLAS) | " + " | ".join(f"Eigen {p}" for p in paths) + " |")
    print("|---|---:|" + "---:|" * len(paths))
    with threadpool_limits(1):
        for what, m, k, n, bt in SHAPES:
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((n, k) if bt else (k, n), dtype=np.float32)
            out = np.empty((m, n), np.float32)
            inner = max(1, int(2e7 // (m * k * n)))
            fns = {"numpy": (lambda: np.matmul(a, b.T if bt else b, out=out))}
            for p in paths:
                fns[p] = (lambda p=p: K._kernels.fgemm(a, b, bt, out, p))
            ref = a @ (b.T if bt else b)
            for p in paths:
                fns[p]()
                assert np.allclose(out, ref, rtol=1e-4, atol=1e-3), (what, p)
            times = {name: [] for name in fns}
            for _ in range(rounds):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        fn()
                    times[name].append((time.perf_counter() - t0) / inner * 1e6)
            med = {name: statistics.median(v) for name, v in times.items()}
            cells = " | ".join(f"{med[p]:.1f} us" for p in paths)
            print(f"| {what} ({m} x {k} x {n}) | {med['numpy']:.1f} us | {cells} |")


if __name__ == "__main__":
    main()
