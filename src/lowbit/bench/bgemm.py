"""``lowbit bench bgemm``: packed XNOR-popcount GEMM vs ``torch.matmul`` fp32, 1 thread.

For each shape M x N x K (the im2col GEMMs of 3x3 convolutions of a VGG/ResNet-like net:
56x56x128, 28x28x256, 14x14x512, 7x7x1024 -> K = 9 * C_in, N = C_out, M = H*W; the last is
batch 64 of a dense-like layer) both systems multiply the *same* ±1 data in this process:

* lowbit: ``bgemm(a, b, K)`` on a (M, K/64) and b (N, K/64) uint64 already packed (weights
  are packed once at export; the time includes bgemm's own panel packing and the int32
  output);
* torch: ``torch.matmul`` of (M, K) by (K, N) float32 with ``torch.set_num_threads(1)``.

Both results are compared (they must be equal: sums of ±1 are exact in fp32).  After a
warm-up, the repeats of the two systems are interleaved (ABBA order) so that a change of
machine load or clock hits both alike; medians are reported.  Wall-clock time is the
measure; the thread CPU time is recorded too (``*_cpu_ms``), which is robust to the process
being descheduled on a shared machine.  torch is imported here only: it is the baseline.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lowbit.runtime import kernels

SHAPES = [(3136, 128, 1152), (784, 256, 2304), (196, 512, 4608), (64, 1024, 9216)]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, thread CPU seconds) of one call."""
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def run_shape(m: int, n: int, k: int, repeats: int, path: str, torch, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    xa = np.where(rng.standard_normal((m, k)) >= 0, 1.0, -1.0).astype(np.float32)  # (M, K)
    xb = np.where(rng.standard_normal((n, k)) >= 0, 1.0, -1.0).astype(np.float32)  # (N, K)
    a = kernels.bitpack(xa, path=None if path == "ref" else path)   # (M, K/64) uint64
    b = kernels.bitpack(xb, path=None if path == "ref" else path)   # (N, K/64) uint64
    ta = torch.from_numpy(xa)                                       # (M, K) float32
    tb = torch.from_numpy(np.ascontiguousarray(xb.T))               # (K, N) float32

    got = kernels.bgemm(a, b, k, threads=1, path=path)
    want = torch.matmul(ta, tb).numpy()
    if not np.array_equal(got, want.astype(np.int32)):
        raise AssertionError(f"bgemm {m}x{n}x{k} on '{path}' differs from torch.matmul")

    def lowbit_call():
        kernels.bgemm(a, b, k, threads=1, path=path)

    def torch_call():
        torch.matmul(ta, tb)

    for _ in range(2):  # warm-up: caches, page faults, torch's first-call set-up
        lowbit_call()
        torch_call()
    lw, lc, tw, tc = [], [], [], []
    for r in range(repeats):  # interleaved, ABBA
        order = (lowbit_call, torch_call) if r % 2 == 0 else (torch_call, lowbit_call)
        for fn in order:
            wall, cpu = _timed(fn)
            (lw if fn is lowbit_call else tw).append(wall)
            (lc if fn is lowbit_call else tc).append(cpu)
    lowbit_s, torch_s = statistics.median(lw), statistics.median(tw)
    macs = m * n * k
    return {
        "shape": f"{m}x{n}x{k}", "M": m, "N": n, "K": k,
        "lowbit_ms": lowbit_s * 1e3, "torch_ms": torch_s * 1e3,
        "speedup": torch_s / lowbit_s,
        "lowbit_gmacs": macs / lowbit_s / 1e9, "torch_gmacs": macs / torch_s / 1e9,
        "lowbit_cpu_ms": statistics.median(lc) * 1e3, "torch_cpu_ms": statistics.median(tc) * 1e3,
        "cpu_speedup": statistics.median(tc) / statistics.median(lc),
        "kernel": kernels.kernel_name(path), "threads": 1, "repeats": repeats,
        "load_1min": _load(),
    }


def _load() -> float | None:
    """1-minute load average (a busy shared machine makes wall times noisy)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def import_torch(prog: str):
    """torch for the baseline, or None after telling the user how to get it (exit 2)."""
    try:
        import torch
    except ImportError:
        print(f"{prog}: the torch baseline needs torch (pip install torch==2.13.0)", file=sys.stderr)
        return None
    return torch


@contextlib.contextmanager
def torch_threads(torch, n: int = 1):
    """torch.set_num_threads(n) inside the block, the previous count restored after it."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def write_rows(rows: list, json_path: str | None) -> None:
    """The benchmark's rows as a JSON list at json_path (parents created), if one is given."""
    if json_path:
        out = Path(json_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {out}")


def main(json_path: str | None = None, repeats: int = 7, kernel: str | None = None) -> int:
    if repeats < 1:
        print("lowbit bench bgemm: --repeats must be >= 1", file=sys.stderr)
        return 2
    try:
        path = kernels.check_path(kernel, source="--kernel") if kernel else kernels.default_path()
    except (ValueError, kernels.KernelUnavailableError) as exc:
        print(f"lowbit bench bgemm: {exc}", file=sys.stderr)
        return 2
    torch = import_torch("lowbit bench bgemm")
    if torch is None:
        return 2
    with torch_threads(torch, 1):
        print(f"cpu: {cpu_name()}; kernel paths here: {', '.join(kernels.available_paths())}; "
              f"torch {torch.__version__}; 1 thread; median of {repeats} interleaved repeats; "
              f"load average {_load()}")
        header = f"{'shape MxNxK':>18} {'lowbit ms':>10} {'torch ms':>9} {'speedup':>8} " \
                 f"{'bin GMAC/s':>11} {'fp32 GMAC/s':>12}  kernel"
        print(header)
        rows = []
        for m, n, k in SHAPES:
            row = run_shape(m, n, k, repeats, path, torch)
            rows.append(row)
            print(f"{row['shape']:>18} {row['lowbit_ms']:10.3f} {row['torch_ms']:9.3f} "
                  f"{row['speedup']:7.2f}x {row['lowbit_gmacs']:11.1f} {row['torch_gmacs']:12.1f}"
                  f"  {row['kernel']}", flush=True)
    write_rows(rows, json_path)
    return 0
