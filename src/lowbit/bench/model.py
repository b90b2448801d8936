"""``lowbit bench model FILE [--data fashion-mnist] --batch 1,2,4,...,256 --threads 1,2 --json PATH``:
the lowbit runtime on a model file and, in the same interleaved rounds
(:func:`lowbit.bench.measure.sweep`), the baselines of the same architecture's float model
(:mod:`lowbit.bench.baselines`: PyTorch fp32 eager, ONNX Runtime fp32, ORT int8 static QDQ).

The architecture comes from the file's ``meta["model"]`` (registry name + kwargs, written by
``lowbit.train.export.export_model``) rebuilt with ``lowbit.train.checkpoint.build_model``;
files without it fall back to :func:`float_twin` of the graph.  All systems get the same
normalised float32 batch.  Records follow :mod:`lowbit.bench.report` (``method`` = the model
name for every system) with file / weight bytes, MACs / BOPs, a per-op time profile of the
runtime (``layers``), optional peak RSS (``--rss``) and, with ``--data``, test accuracy (lowbit:
``Runtime.predict``, the code path of ``lowbit run``).  The JSON also keeps the old top-level
``lowbit_ms`` / ``torch_ms`` / ``speedup`` (p50 at the first batch and thread count).
Every record also has ``energy_uj``, the estimated energy per inference of
:mod:`lowbit.bench.energy` (lowbit: its model file; the baselines: the float twin, ORT int8
priced with 8-bit multiplies and 1-byte tensors).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from lowbit.bench.bgemm import _load, cpu_name, torch_threads
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
    shape = rt.inputs[0].get("shape") or [1, 28, 28]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch,) + tuple(shape[1:]), dtype=np.uint8)
    with torch_threads(torch, threads):
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
    med = lambda v: 1000 * statistics.median(v)
    res = {"file": str(path), "model": (rt.meta.get("model") or {}).get("name"),
           "batch": batch, "threads": threads, "repeats": repeats, "inner": inner,
           "lowbit_ms": med(lw), "torch_ms": med(tw), "speedup": med(tw) / med(lw),
           "lowbit_cpu_ms": med(lc), "torch_cpu_ms": med(tc), "speedup_cpu": med(tc) / med(lc),
           "kernel": bitconv.conv_kernel_name(), "cpu": cpu_name(), "load_average": _load(),
           "torch": torch.__version__}
    return res


def _ints(v) -> list[int]:
    if isinstance(v, int):
        return [v]
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v]
    return [int(x) for x in str(v).split(",") if x.strip()]


def _is_quantized(model) -> bool:
    from lowbit.train import layers
    return any(isinstance(m, (layers.QuantConv2d, layers.QuantLinear)) for m in model.modules())


def lowbit_runner(path: str, threads: int = 1):
    """The lowbit runtime as a :class:`lowbit.bench.baselines.Runner` (float32 normalised
    input, like the baselines: ``Runtime.logits`` skips its uint8 table for float input)."""
    import os

    from lowbit.bench.baselines import Runner
    from lowbit.runtime.graph import Runtime
    rt = Runtime(path, threads)
    wb = sum(rt.weight_bytes().values()) + sum(a.nbytes for a in rt._float.values()) \
        + sum(a.nbytes for v in rt._bn.values() for a in v)
    return Runner("lowbit", lambda x: rt.logits(x, normalized=True), threads, {"file": str(path),
                                                 "file_bytes": os.path.getsize(path),
                                                 "weight_bytes": int(wb),
                                                 "kernel": bitconv.conv_kernel_name(),
                                                 "executor": rt.executor,
                                                 "runtime": rt})


def runtime_accuracy(path: str, root: str | None = None, threads: int = 1) -> dict:
    """Test accuracy through the runtime -- the code path of ``lowbit run FILE``
    (``Runtime(path, threads).predict`` on the uint8 test images)."""
    from lowbit.data import load as load_data
    from lowbit.runtime.graph import Runtime
    images, labels = load_data("test", root)
    pred = Runtime(path, threads).predict(images)
    return {"acc": float((pred == labels).mean()), "test_images": int(labels.size)}


def sweep_model(path: str, batches=(1,), threads=(1,), repeats: int = 21, warmup: int = 3,
                data: str | None = None, rss: bool = False, checkpoint: str | None = None,
                calib: int = 64, systems=("torch-fp32", "ort-fp32", "ort-int8"),
                profile: bool = True, progress: bool = True, seed: int = 0,
                method: str | None = None, energy_table: dict | None = None) -> dict:
    """``{"meta", "records"}``: the lowbit runtime on ``path`` and the baselines of the same
    architecture's float twin, interleaved by :func:`lowbit.bench.measure.sweep`; records in
    the schema of :mod:`lowbit.bench.report` (``method`` = the model name).  ``data``: a data
    root (or "fashion-mnist" for the default search): adds ``acc`` (lowbit: through the
    runtime, like ``lowbit run``; baselines only when the twin *is* the model, i.e. a float
    model with trained weights from ``checkpoint``)."""
    import platform
    import tempfile

    import onnxruntime
    import torch

    from lowbit import codec
    from lowbit.bench import baselines as BL
    from lowbit.bench import measure as M
    from lowbit.data.normalization import Normalization

    mf = codec.load(path)
    graph, meta = codec.graph.parse(mf.graph, f"{path}: graph", mf.entries), mf.meta
    spec = meta.get("model") if isinstance(meta.get("model"), dict) else None
    shape = tuple(graph["inputs"][0].get("shape") or [1, 28, 28])
    norm_d = graph["inputs"][0].get("normalization")
    norm = Normalization.from_dict(norm_d, f"{path}: input normalization") if norm_d else None
    root = None if data in (None, "fashion-mnist") else data
    torch.manual_seed(seed)
    trained = False
    if checkpoint:
        from lowbit.train.checkpoint import load_model
        model, cmeta = load_model(checkpoint)
        spec = spec or cmeta.get("model")
        trained = True
    elif spec:
        from lowbit.train.checkpoint import build_model
        model = build_model(spec["name"], **(spec.get("kwargs") or {})).eval()
    else:
        model = float_twin(graph, shape)          # architecture from the graph alone
    method = method or (spec or {}).get("name") or Path(path).stem
    twin = BL.float_twin(model)
    ops_lowbit = M.op_counts(model, (1,) + shape) if spec or checkpoint else M.op_counts(twin, (1,) + shape)
    ops_twin = M.op_counts(twin, (1,) + shape)
    want_acc = data is not None
    if norm is None:
        from lowbit.data import load as load_data
        norm = Normalization.from_images(load_data("train", root)[0])
    calib_x = None
    if "ort-int8" in systems:       # Fashion-MNIST; other inputs (a detector's frames): random
        calib_x = BL.calibration_images(calib, root, seed, norm) if shape == (1, 28, 28) else \
            norm.apply(np.random.default_rng([seed, 1]).integers(0, 256, (calib,) + shape,
                                                                 dtype=np.uint8))
    from lowbit.data import load as load_data
    test_x, test_y = load_data("test", root) if want_acc else (None, None)
    rng = np.random.default_rng(seed)
    bench_x = norm.apply(test_x[:256]) if want_acc else \
        norm.apply(rng.integers(0, 256, (256,) + shape, dtype=np.uint8))
    bench_x = np.ascontiguousarray(bench_x.reshape((len(bench_x),) + shape), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        cache: dict[int, list] = {}

        def make(t):
            cache[t] = [lowbit_runner(path, t)] + list(BL.make_baselines(
                model, tmp, calib_x, t, systems, input_shape=shape))
            return cache[t]
        records = M.sweep(make, bench_x, _ints(batches), _ints(threads), repeats=repeats,
                          warmup=warmup, method=method, progress=progress)
        first = cache[_ints(threads)[0]]
        extra: dict[str, dict] = {}
        energies = _energies(path, twin, shape, energy_table)
        ref = first[1].run(bench_x[:64]) if len(first) > 1 else None
        for r in first:
            e = {k: r.info[k] for k in ("file_bytes", "weight_bytes") if k in r.info}
            e.update(ops_lowbit if r.name == "lowbit" else ops_twin)
            if r.name == "lowbit":
                e["kernel"] = r.info["kernel"]
                e["executor"] = r.info["executor"]
                if profile:      # per-op wall time from the executor that ran (native: C++)
                    e["layers"] = r.info["runtime"].profile_ops(bench_x[:1], calls=10,
                                                                     normalized=True)
                if want_acc:
                    e.update(runtime_accuracy(path, root, r.threads))
            else:
                if ref is not None:
                    e["argmax_agreement_vs_torch"] = float(
                        (r.run(bench_x[:64]).argmax(1) == ref.argmax(1)).mean())
                if want_acc and trained and not _is_quantized(model):
                    pred = np.concatenate([r.run(norm.apply(test_x[i:i + 500]).reshape(
                        (-1,) + shape)).argmax(1) for i in range(0, len(test_y), 500)])
                    e["acc"] = float((pred == test_y).mean())
            if r.name in energies:
                e["energy_uj"] = energies[r.name]
            if rss:
                p = r.info.get("file")
                if r.name == "torch-fp32":
                    p = str(Path(tmp) / "twin.pt")
                    torch.save(twin, p)
                imports, setup = M.rss_snippets(r.name, p, r.threads)
                e.update(M.peak_rss(setup, imports, batch_shape=(1,) + shape))
            extra[r.name] = e
    for rec in records:
        e = extra.get(rec["system"], {})
        # size/ops/acc on every record; the (long) layer profile on the first only
        rec.update({k: v for k, v in e.items() if k != "layers"})
    for rec in records:
        if rec["system"] == "lowbit" and "layers" in extra.get("lowbit", {}):
            rec["layers"] = extra["lowbit"]["layers"]
            break
    info = {"cpu": cpu_name(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "kernel": bitconv.conv_kernel_name(),
            "file": str(path), "model": method, "vnni": BL.has_vnni(),
            "weights": "trained (checkpoint)" if trained else "random (speed only)",
            "command": "lowbit " + " ".join(sys.argv[1:]) if sys.argv else ""}
    return {"meta": info, "records": records}


def _energies(path: str, twin, shape, table: dict | None = None) -> dict[str, float]:
    """Estimated energy per inference (uJ, ``lowbit.bench.energy``; default: its Horowitz
    table): lowbit on its model file; PyTorch / ORT fp32 on the float twin; ORT int8 on the
    twin priced as int8.  A twin the exporter refuses gets no estimate."""
    from lowbit.bench import energy as E
    table = table or E.TABLE
    out = {"lowbit": E.estimate_file(path, table)["total_uj"]}
    try:
        fp32 = E.estimate_module(twin, shape, table)["total_uj"]
        int8 = E.estimate_module(twin, shape, table, int8=True)["total_uj"]
    except ValueError:
        return out
    out.update({"torch-fp32": fp32, "ort-fp32": fp32, "ort-int8": int8})
    return out


def summary_line(records: list[dict]) -> dict:
    """lowbit_ms / torch_ms / speedup (p50) at the first batch and thread count measured."""
    b0, t0 = records[0]["batch"], records[0]["threads"]
    at = {r["system"]: r for r in records if r["batch"] == b0 and r["threads"] == t0}
    out = {"batch": b0, "threads": t0}
    if "lowbit" in at:
        out["lowbit_ms"] = at["lowbit"]["latency_ms"]["p50"]
        out["lowbit_cpu_ms"] = at["lowbit"]["cpu_ms"]
    if "torch-fp32" in at:
        out["torch_ms"] = at["torch-fp32"]["latency_ms"]["p50"]
        out["torch_cpu_ms"] = at["torch-fp32"]["cpu_ms"]
    if "lowbit_ms" in out and "torch_ms" in out:
        out["speedup"] = out["torch_ms"] / out["lowbit_ms"]
        out["speedup_cpu"] = out["torch_cpu_ms"] / out["lowbit_cpu_ms"]
    for s in ("ort-fp32", "ort-int8"):
        if s in at and "lowbit" in at:
            out[f"speedup_vs_{s.replace('-', '_')}"] = (at[s]["latency_ms"]["p50"]
                                                        / at["lowbit"]["latency_ms"]["p50"])
    return out


def print_table(records: list[dict], out=sys.stdout) -> None:
    print(f"{'system':>11} {'batch':>5} {'thr':>3} {'p50 ms':>9} {'p90 ms':>9} {'img/s':>9} "
          f"{'cpu ms':>8} {'vs torch':>8} {'acc':>7} {'energy uJ':>9}", file=out)
    for rec in records:
        ref = next((r for r in records if r["system"] == "torch-fp32" and r["batch"] == rec["batch"]
                    and r["threads"] == rec["threads"] and r["method"] == rec["method"]), None)
        sp = f"{ref['latency_ms']['p50'] / rec['latency_ms']['p50']:7.2f}x" if ref else "       -"
        acc = f"{100 * rec['acc']:6.2f}%" if rec.get("acc") is not None else "      -"
        energy = f"{rec['energy_uj']:9.3f}" if rec.get("energy_uj") is not None else f"{'-':>9}"
        print(f"{rec['system']:>11} {rec['batch']:5d} {rec['threads']:3d} "
              f"{rec['latency_ms']['p50']:9.3f} {rec['latency_ms']['p90']:9.3f} "
              f"{rec['throughput']:9.1f} {rec['cpu_ms']:8.3f} {sp} {acc} {energy}", file=out)


def main(path: str, batch=1, json_path: str | None = None, repeats: int = 11,
         inner: int = 20, threads=1, data: str | None = None, rss: bool = False,
         checkpoint: str | None = None, calib: int = 64, progress: bool = True,
         systems=("torch-fp32", "ort-fp32", "ort-int8"), energy_table: dict | None = None) -> int:
    """``lowbit bench model``: the lowbit runtime and the baselines, interleaved (see
    :func:`sweep_model`); prints a table, writes ``{meta, records, lowbit_ms, torch_ms,
    speedup, ...}`` (the last: p50 at the first batch / thread count) to ``json_path``.
    ``inner`` is kept for compatibility (each timed call is one call now)."""
    from lowbit.codec import FormatError
    from lowbit.data import DataError
    try:
        res = sweep_model(path, _ints(batch), _ints(threads), repeats=max(1, repeats), data=data,
                          rss=rss, checkpoint=checkpoint, calib=calib, systems=tuple(systems),
                          progress=progress, warmup=2 if repeats < 3 else 3,
                          energy_table=energy_table)
    except ImportError as e:
        print(f"lowbit bench model: the baselines need torch and onnxruntime ({e})",
              file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError, FormatError, DataError) as e:
        print(f"lowbit bench model: error: {e}", file=sys.stderr)
        return 2
    head = summary_line(res["records"])
    res = {**head, "file": str(path), "model": res["meta"]["model"], "repeats": repeats,
           "kernel": res["meta"]["kernel"], "cpu": res["meta"]["cpu"],
           "load_average": _load(), "torch": res["meta"]["torch"], **res}
    print(f"{path} ({res['model']}), kernels {res['kernel']}, load average {res['load_average']}")
    print_table(res["records"])
    if "speedup" in head:
        print(f"batch {head['batch']}, {head['threads']} thread(s): lowbit {head['lowbit_ms']:.3f} ms, "
              f"torch fp32 {head['torch_ms']:.3f} ms, speedup {head['speedup']:.2f}x")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(res, indent=2, default=str) + "\n")
        print(f"wrote {json_path}")
    return 0
