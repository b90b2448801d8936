"""``lowbit bench kernels``: bitwise conv2d / dense kernels vs PyTorch fp32, 1 thread.

Rows (batch 1 unless said otherwise; both systems compute the *same* ±1 / ternary data in
this process and the results are checked equal - sums of ±1 are exact in fp32):

* ``binary_conv2d``: 3x3, stride 1, same padding (zero padding, exact through lowbit's border
  correction), NHWC 56x56x128->128, 28x28x256->256, 14x14x512->512, 7x7x1024->1024, on the
  best path of this CPU (or ``--kernel``) and again on the ``portable`` path (what ARM and
  other non-x86 targets run);
* ``binary_dense``: 1x4096->4096 and 64x4096->4096 (batch 1 and 64);
* ``ternary_conv2d``: 56x56x128->128 and 28x28x256->256, weights in {-1, 0, +1} (~1/3 zero).

lowbit: the activations are already bit-packed NHWC (what the previous binary layer's
``out='bits'`` stage hands over), the weights prepared once (``prepare_*``, as at model
load), the output is the int32 accumulators (same size as torch's float32 output).  The
``lowbit_bits_ms`` column times the fused threshold stage instead (packed bits out: what a
BNN hidden layer really produces).  torch: ``F.conv2d`` / ``F.linear`` on NCHW float32 with
``torch.set_num_threads(1)``.

Timing: after a warm-up, repeats of the two systems are interleaved (ABBA) and medians
reported; wall time and the thread CPU time (``*_cpu_ms``, robust to the process being
descheduled on a shared machine) are both recorded, with speedups for each.  Peaks: the
binary MAC/s of register-only loops of XOR+POPCNT+ADD (``popcnt_peak_gmacs``, the issue's
"XOR-popcount peak") and of the kernel's own instruction mix (``kernel_peak_gmacs``), measured
in this process (``lowbit._kernels.calibrate_peak``); ``pct_of_popcnt_peak`` uses CPU time.
torch is imported here only: it is the baseline.
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from lowbit.bench.bgemm import _load, cpu_name, import_torch, torch_threads, write_rows
from lowbit.runtime import bitconv, kernels, ref

CONV_SHAPES = [(56, 128), (28, 256), (14, 512), (7, 1024)]   # (H = W, C = OC), 3x3, pad 1
DENSE_SHAPES = [(1, 4096, 4096), (64, 4096, 4096)]           # (M, K, N)
TERNARY_SHAPES = [(56, 128), (28, 256)]

_PEAK_LOOP = {"avx2/nlut-2x64": "nlut", "avx2/popcnt-2x4": "popcnt", "avx512/vpopcntq-6x32": "vpopcntq"}


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, thread CPU seconds) of one call."""
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def _interleaved(lowbit_call, torch_call, repeats: int) -> dict:
    for _ in range(2):  # warm-up: caches, page faults, torch's first-call set-up
        lowbit_call()
        torch_call()
    lw, lc, tw, tc = [], [], [], []
    for r in range(repeats):  # ABBA
        order = (lowbit_call, torch_call) if r % 2 == 0 else (torch_call, lowbit_call)
        for fn in order:
            wall, cpu = _timed(fn)
            (lw if fn is lowbit_call else tw).append(wall)
            (lc if fn is lowbit_call else tc).append(cpu)
    med = statistics.median
    return {"lowbit_s": med(lw), "torch_s": med(tw), "lowbit_cpu_s": med(lc), "torch_cpu_s": med(tc)}


def _median_cpu(fn, repeats: int) -> tuple[float, float]:
    fn()
    times = [_timed(fn) for _ in range(repeats)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def _row(op: str, shape: str, macs: int, t: dict, kernel: str, peaks: dict, **extra) -> dict:
    lw, tw, lc, tc = t["lowbit_s"], t["torch_s"], t["lowbit_cpu_s"], t["torch_cpu_s"]
    popcnt_peak = peaks.get("popcnt")
    kernel_peak = peaks.get(_PEAK_LOOP.get(kernel, ""))
    gmacs_cpu = macs / lc / 1e9
    row = {
        "op": op, "shape": shape, "kernel": kernel, "threads": 1,
        "lowbit_ms": lw * 1e3, "torch_ms": tw * 1e3, "speedup": tw / lw,
        "lowbit_cpu_ms": lc * 1e3, "torch_cpu_ms": tc * 1e3, "cpu_speedup": tc / lc,
        "macs": macs, "lowbit_gmacs": macs / lw / 1e9, "lowbit_gmacs_cpu": gmacs_cpu,
        "torch_gmacs_cpu": macs / tc / 1e9,
        "popcnt_peak_gmacs": popcnt_peak, "kernel_peak_gmacs": kernel_peak,
        "pct_of_popcnt_peak": 100 * gmacs_cpu / popcnt_peak if popcnt_peak else None,
        "pct_of_kernel_peak": 100 * gmacs_cpu / kernel_peak if kernel_peak else None,
    }
    row.update(extra)
    row["load_1min"] = _load()
    return row


def _pm1(rng, shape) -> np.ndarray:
    return np.where(rng.standard_normal(shape) >= 0, 1.0, -1.0).astype(np.float32)


def conv_row(h: int, c: int, path: str, repeats: int, torch, peaks: dict, ternary: bool = False,
             variant: str | None = None, seed: int = 0) -> dict:
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    xf = _pm1(rng, (1, h, h, c))                                     # NHWC ±1
    if ternary:
        wt = rng.integers(-1, 2, (c, 3, 3, c)).astype(np.float32)    # {-1, 0, 1}
        pw = bitconv.prepare_ternary_conv2d(ref.bitpack(np.where(wt > 0, 1, -1).astype(np.int8)),
                                            ref.bitpack(np.where(wt != 0, 1, -1).astype(np.int8)),
                                            c, path=path, variant=variant)
        run = bitconv.ternary_conv2d
    else:
        wt = _pm1(rng, (c, 3, 3, c))
        pw = bitconv.prepare_binary_conv2d(ref.bitpack(wt), c, path=path, variant=variant)
        run = bitconv.binary_conv2d
    x = kernels.bitpack(xf)                                          # (1, H, W, C/64) uint64
    tx = torch.from_numpy(np.ascontiguousarray(xf.transpose(0, 3, 1, 2)))   # NCHW float32
    tw = torch.from_numpy(np.ascontiguousarray(wt.transpose(0, 3, 1, 2)))   # OIHW float32
    got = run(x, pw, padding=1)
    want = F.conv2d(tx, tw, padding=1).permute(0, 2, 3, 1).numpy()
    if not np.array_equal(got, want.astype(np.int32)):
        raise AssertionError(f"{'ternary' if ternary else 'binary'} conv {h}x{h}x{c} on "
                             f"{pw.kernel} differs from torch F.conv2d")
    t = _interleaved(lambda: run(x, pw, padding=1), lambda: F.conv2d(tx, tw, padding=1), repeats)
    thr = (np.zeros(c, np.int32), np.zeros(c, np.uint8))
    bits_wall, bits_cpu = _median_cpu(lambda: run(x, pw, padding=1, out="bits", threshold=thr), repeats)
    macs = h * h * c * c * 9
    return _row("ternary_conv2d" if ternary else "binary_conv2d", f"{h}x{h}x{c}->{c}", macs, t,
                pw.kernel, peaks, lowbit_bits_ms=bits_wall * 1e3, lowbit_bits_cpu_ms=bits_cpu * 1e3,
                weight_bytes=pw.nbytes, torch_weight_bytes=wt.size * 4)


def dense_row(m: int, k: int, n: int, path: str, repeats: int, torch, peaks: dict,
              variant: str | None = None, seed: int = 0) -> dict:
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    xf, wf = _pm1(rng, (m, k)), _pm1(rng, (n, k))
    x = kernels.bitpack(xf)
    pw = bitconv.prepare_binary_dense(ref.bitpack(wf), k, path=path, variant=variant)
    tx, tw = torch.from_numpy(xf), torch.from_numpy(wf)
    if not np.array_equal(bitconv.binary_dense(x, pw), F.linear(tx, tw).numpy().astype(np.int32)):
        raise AssertionError(f"binary dense {m}x{k}->{n} on {pw.kernel} differs from torch F.linear")
    t = _interleaved(lambda: bitconv.binary_dense(x, pw), lambda: F.linear(tx, tw), repeats)
    return _row("binary_dense", f"{m}x{k}->{n}", m * k * n, t, pw.kernel, peaks,
                weight_bytes=pw.nbytes, torch_weight_bytes=wf.size * 4)


def measure_peaks() -> dict:
    """Register-only loop peaks (binary GMAC/s, thread CPU time) available on this CPU."""
    peaks = {}
    from lowbit import _kernels
    for loop, path in (("popcnt", "avx2"), ("nlut", "avx2"), ("vpopcntq", "avx512")):
        if path in kernels.available_paths():
            peaks[loop] = float(_kernels.calibrate_peak(loop, 0.3))
    return peaks


def _fmt(v, spec) -> str:
    return "-" if v is None else format(v, spec)


def _print_row(r: dict) -> None:
    print(f"{r['op']:>15} {r['shape']:>18} {r['lowbit_ms']:9.3f} {r['torch_ms']:9.2f} "
          f"{r['speedup']:7.2f}x {r['lowbit_cpu_ms']:9.3f} {r['torch_cpu_ms']:9.2f} "
          f"{r['cpu_speedup']:7.2f}x {r['lowbit_gmacs_cpu']:8.1f} {_fmt(r['pct_of_popcnt_peak'], '6.0f')}%"
          f"  {r['kernel']}", flush=True)


def main(json_path: str | None = None, repeats: int = 7, kernel: str | None = None,
         variant: str | None = None, portable: bool = True) -> int:
    if repeats < 1:
        print("lowbit bench kernels: --repeats must be >= 1", file=sys.stderr)
        return 2
    try:
        path = kernels.check_path(kernel, source="--kernel") if kernel else kernels.default_path()
        if path == "ref":
            raise ValueError("--kernel=ref: the numpy reference is not benchmarked (use a compiled path)")
        if variant is not None and variant not in bitconv.xconv_variants(path):
            raise ValueError(f"--variant={variant!r} is not a variant of '{path}' "
                             f"({', '.join(bitconv.xconv_variants(path))})")
    except (ValueError, kernels.KernelUnavailableError) as exc:
        print(f"lowbit bench kernels: {exc}", file=sys.stderr)
        return 2
    torch = import_torch("lowbit bench kernels")
    if torch is None:
        return 2
    rows = []
    with torch_threads(torch, 1):
        peaks = measure_peaks()
        print(f"cpu: {cpu_name()}; kernel paths here: {', '.join(kernels.available_paths())}; "
              f"torch {torch.__version__}; 1 thread; median of {repeats} interleaved repeats; "
              f"load average {_load()}")
        print("register-only peaks (binary GMAC/s, CPU time): " +
              (", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) or "none on this path"))
        print(f"{'op':>15} {'shape':>18} {'lowbit ms':>9} {'torch ms':>9} {'speedup':>8} "
              f"{'lb cpu ms':>9} {'th cpu ms':>9} {'cpu spd':>8} {'GMAC/s':>8} {'%peak':>7}  kernel")
        plan = [("conv", h, c, path) for h, c in CONV_SHAPES]
        plan += [("dense", m, k, n, path) for m, k, n in DENSE_SHAPES]
        plan += [("ternary", h, c, path) for h, c in TERNARY_SHAPES]
        if portable and path != "portable":
            plan += [("conv", h, c, "portable") for h, c in CONV_SHAPES]
        for item in plan:
            var = variant if item[-1] == path else None
            if item[0] == "conv":
                row = conv_row(item[1], item[2], item[3], repeats, torch, peaks, variant=var)
            elif item[0] == "ternary":
                row = conv_row(item[1], item[2], item[3], repeats, torch, peaks, ternary=True, variant=var)
            else:
                row = dense_row(item[1], item[2], item[3], item[4], repeats, torch, peaks, variant=var)
            rows.append(row)
            _print_row(row)
    write_rows(rows, json_path)
    return 0
