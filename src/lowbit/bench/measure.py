"""Measurement helpers shared by ``lowbit bench model`` and the baselines: latency, throughput,
peak memory, weight bytes and op counts, as plain JSON-ready dicts (the record schema of
:mod:`lowbit.bench.report`).

Timing (the house style of :mod:`lowbit.bench.bgemm`): one fixed input per batch size, a
warm-up of every system, then ``repeats`` rounds; inside a round every system runs once, in a
round-robin order that starts one system later each round, so a change of machine load or
clock hits all systems alike.  Each call is timed with ``time.perf_counter`` (wall) and
``time.process_time`` (CPU of all the process's threads: robust to being descheduled on a
shared machine; equals wall x threads when all threads are busy).  Reported: p50 / p90 / mean
of the per-call wall times, the median CPU time, and ``throughput = batch / p50`` images/s.

Peak memory: :func:`peak_rss` runs a snippet in a fresh Python process and reads its peak RSS
(``VmHWM`` of /proc/self/status; ``getrusage`` ``ru_maxrss`` elsewhere -- on Linux that one
survives fork+exec and would report the parent's peak) after the imports and again after
building and running the system; both are reported (the interpreter + libraries alone take
most of it).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = ["percentile", "time_systems", "sweep", "peak_rss", "op_counts", "load_average"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, np.float64), q))


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _progress(total: int, desc: str, enabled: bool):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, disable=None if enabled else True, leave=False, file=sys.stderr)
    except ImportError:  # pragma: no cover -- tqdm is a dependency of the venv
        class _Null:
            def update(self, n=1): pass
            def close(self): pass
        return _Null()


def settle(max_s: float = 0.25, slice_s: float = 0.005) -> float:
    """Sleep until no thread of this process burns CPU (a 5 ms slice with < 0.5 ms of process
    CPU time), at most ``max_s``; returns the seconds waited.

    Thread pools spin after a call: ONNX Runtime's intra-op workers for ~50 ms (measured here
    with 2 threads), libgomp's (torch) ~10 ms unless OMP_WAIT_POLICY=PASSIVE.  Interleaved in
    one process, the next system would then share its cores with those spinning threads, so
    multi-thread measurements wait for the previous system to go quiet."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        c0 = time.process_time()
        time.sleep(slice_s)
        if time.process_time() - c0 < 0.1 * slice_s:
            break
    return time.perf_counter() - t0


def time_systems(runners: Sequence, x: np.ndarray, repeats: int = 21, warmup: int = 3,
                 progress: bool = True, desc: str = "") -> list[dict]:
    """Interleaved timing of ``runners`` (objects with ``name``, ``run``, ``threads``) on the
    same batch ``x``; one record per runner (fields: :mod:`lowbit.bench.report`).  With more
    than one thread, each timed call starts after :func:`settle` (no spinning leftovers of
    the previous system)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    n = len(runners)
    wall: list[list[float]] = [[] for _ in range(n)]
    cpu: list[list[float]] = [[] for _ in range(n)]
    for _ in range(warmup):
        for r in runners:
            r.run(x)
    bar = _progress(repeats * n, desc or f"batch {len(x)}", progress)
    try:
        for rep in range(repeats):
            for k in range(n):
                i = (rep + k) % n          # round robin: each round starts one system later
                if int(getattr(runners[i], "threads", 1)) > 1:
                    settle()
                c0, t0 = time.process_time(), time.perf_counter()
                runners[i].run(x)
                wall[i].append(time.perf_counter() - t0)
                cpu[i].append(time.process_time() - c0)
                bar.update(1)
    finally:
        bar.close()
    batch = int(len(x))
    out = []
    for i, r in enumerate(runners):
        p50 = percentile(wall[i], 50) * 1e3
        out.append({
            "system": r.name, "batch": batch, "threads": int(getattr(r, "threads", 1)),
            "latency_ms": {"p50": p50, "p90": percentile(wall[i], 90) * 1e3,
                           "mean": statistics.fmean(wall[i]) * 1e3,
                           "min": min(wall[i]) * 1e3},
            "latency_per_image_ms": p50 / batch,
            "throughput": batch / (p50 / 1e3),
            "cpu_ms": statistics.median(cpu[i]) * 1e3,
            "repeats": repeats, "load_1min": load_average(),
        })
    return out


def sweep(make_runners: Callable[[int], Sequence], images: np.ndarray,
          batches: Iterable[int] = (1,), threads: Iterable[int] = (1,), repeats: int = 21,
          warmup: int = 3, method: str | None = None, progress: bool = True,
          min_repeats: int = 3) -> list[dict]:
    """Records for every (threads, batch, system).  ``make_runners(t)`` builds the systems with
    ``t`` threads; ``images`` float32 ``(M, ...)`` is tiled when a batch is larger than ``M``.
    Large batches repeat fewer times (``repeats * 8 / batch``, at least ``min_repeats``) so a
    sweep stays short; batch 1 gets the full ``repeats`` (p90 needs them)."""
    records = []
    for t in threads:
        runners = make_runners(int(t))
        for b in batches:
            reps = max(min_repeats, min(repeats, (repeats * 8) // max(1, int(b))))
            idx = np.arange(int(b)) % len(images)
            x = np.ascontiguousarray(images[idx], dtype=np.float32)
            for rec in time_systems(runners, x, reps, warmup, progress,
                                    desc=f"threads {t} batch {b}"):
                if method is not None:
                    rec["method"] = method
                records.append(rec)
    return records


_RSS_TEMPLATE = """\
import json, resource, sys
import numpy as np
def _rss():
    # VmHWM: this address space's peak RSS, reset by exec (ru_maxrss is not: after fork+exec
    # it keeps the parent's high-water mark, so a big parent would hide the child's peak).
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
{imports}
_after_imports = _rss()
{setup}
_x = np.zeros({shape!r}, dtype=np.float32)
for _ in range({calls}):
    run(_x)
print("LOWBIT_RSS " + json.dumps({{"import_rss_bytes": _after_imports, "peak_rss_bytes": _rss()}}))
"""


def peak_rss(setup: str, imports: str = "", batch_shape=(1, 1, 28, 28), calls: int = 3,
             timeout: float = 300.0, env: dict | None = None) -> dict:
    """Peak RSS of a system in a fresh interpreter.  ``imports`` is run first (its RSS is
    reported as ``import_rss_bytes``); ``setup`` must define ``run(x)``; it is then called
    ``calls`` times on zeros of ``batch_shape``.  Returns ``{"import_rss_bytes",
    "peak_rss_bytes", "model_rss_bytes"}`` (the last = peak - import)."""
    code = _RSS_TEMPLATE.format(imports=textwrap.dedent(imports), setup=textwrap.dedent(setup),
                                shape=tuple(batch_shape), calls=int(calls))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    for line in proc.stdout.splitlines():
        if line.startswith("LOWBIT_RSS "):
            d = json.loads(line[len("LOWBIT_RSS "):])
            d["model_rss_bytes"] = d["peak_rss_bytes"] - d["import_rss_bytes"]
            return d
    raise RuntimeError(f"peak_rss: the subprocess failed (rc {proc.returncode}):\n"
                       f"{proc.stderr[-2000:]}")


def rss_snippets(system: str, path: str, threads: int = 1) -> tuple[str, str]:
    """``(imports, setup)`` for :func:`peak_rss` of a standard system stored at ``path``:
    ``ort-*`` an ONNX file, ``torch-fp32`` a ``torch.save``'d module, ``lowbit`` a lowbit
    model file (``lowbit.runtime.graph.Runtime(path, threads).predict``)."""
    if system.startswith("ort"):
        return ("import onnxruntime as ort",
                f"so = ort.SessionOptions(); so.intra_op_num_threads = {threads}\n"
                f"so.inter_op_num_threads = 1\n"
                f"sess = ort.InferenceSession({path!r}, so, providers=['CPUExecutionProvider'])\n"
                f"run = lambda x: sess.run(None, {{sess.get_inputs()[0].name: x}})")
    if system.startswith("torch"):
        return ("import torch; import lowbit.train.layers",
                f"torch.set_num_threads({threads})\n"
                f"model = torch.load({path!r}, weights_only=False).eval()\n"
                f"def run(x):\n"
                f"    with torch.inference_mode():\n"
                f"        return model(torch.from_numpy(x))")
    if system == "lowbit":
        return ("from lowbit.runtime.graph import Runtime",
                f"rt = Runtime({path!r}, {threads})\n"
                f"def run(x):\n    return rt.predict(x, normalized=True)")
    raise ValueError(f"rss_snippets: unknown system {system!r}")


def op_counts(model, input_shape=(1, 1, 28, 28)) -> dict:
    """Per-image op counts and weight bytes from :func:`lowbit.train.summary.summarize`:
    ``macs`` (all), ``float_macs``, ``bops`` (binary / bit-plane ops = MACs x weight bits x
    input bits of low-bit layers), ``params``, ``fp32_weight_bytes`` and ``packed_weight_bytes``
    (the layers' own packed sizes).  A float model has ``bops = 0, float_macs = macs``."""
    from lowbit.train.summary import summarize
    s = summarize(model, input_shape)
    has_extra = any("float MACs" in r.extra for r in s.rows)
    bops = sum(int(r.extra.get("BOPs", 0)) for r in s.rows)
    fmacs = sum(int(r.extra.get("float MACs", 0)) for r in s.rows) if has_extra else s.macs
    return {"macs": int(s.macs), "float_macs": int(fmacs), "bops": int(bops),
            "params": int(s.params), "fp32_weight_bytes": int(s.bytes_fp32),
            "packed_weight_bytes": int(s.packed_bytes)}
