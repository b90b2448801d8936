"""``lowbit bench baselines --model NAME``: PyTorch fp32 eager vs ONNX Runtime fp32 vs ONNX
Runtime int8 (static QDQ) on the float twin of a registry model (or of a checkpoint's model),
interleaved, per batch size and thread count; writes report records (lowbit.bench.report).

Weights: random init (seeded) unless ``--checkpoint`` is given -- speed does not depend on the
values.  int8 calibration: ``--calib`` Fashion-MNIST training images.  With ``--acc N`` each
system's accuracy on the first N test images is measured too (meaningful only for a trained
float model: the twin of a quantized checkpoint is not that model).
"""
from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from lowbit.bench import baselines as B
from lowbit.bench import measure as M


def _ints(s: str) -> list[int]:
    return [int(v) for v in str(s).split(",") if v.strip()]


def add_arguments(p) -> None:
    p.add_argument("--model", default="bnn-vgg-small", help="registry model name")
    p.add_argument("--checkpoint", default=None, help="take the model and weights from here")
    p.add_argument("--batch", default="1", help="batch sizes, e.g. 1,8,64")
    p.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    p.add_argument("--repeats", type=int, default=31)
    p.add_argument("--calib", type=int, default=64, help="calibration images for int8")
    p.add_argument("--acc", type=int, default=0, help="accuracy on the first N test images")
    p.add_argument("--rss", action="store_true", help="peak RSS of each system (subprocesses)")
    p.add_argument("--data", default=None, help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--json", metavar="PATH", help="write {meta, records} here")
    p.add_argument("--seed", type=int, default=0)


def _model(args):
    import torch
    torch.manual_seed(args.seed)
    if args.checkpoint:
        from lowbit.train.checkpoint import load_model
        model, meta = load_model(args.checkpoint)
        return model, meta.get("model", {}).get("name", args.model), model.normalization
    from lowbit.train import registry
    return registry.build(args.model).eval(), args.model, None


def run(args) -> int:
    import onnxruntime
    import torch

    from lowbit.bench.bgemm import cpu_name  # here: it loads the compiled kernels
    from lowbit.data import fashion
    from lowbit.data.normalization import Normalization

    model, method, norm = _model(args)
    train_x, _ = fashion.load("train", args.data)
    norm = norm or Normalization.from_images(train_x)
    calib = B.calibration_images(args.calib, args.data, args.seed, norm)
    test_x, test_y = fashion.load("test", args.data)
    images = norm.apply(test_x[:256])
    ops = M.op_counts(B.float_twin(model))
    batches, threads = _ints(args.batch), _ints(args.threads)
    print(f"cpu: {cpu_name()} (VNNI: {B.has_vnni()}); torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; model {method} float twin; batches {batches}, threads "
          f"{threads}; load average {M.load_average()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cache: dict[int, list] = {}

        def make(t):
            cache[t] = B.make_baselines(model, tmp, calib, threads=t)
            return cache[t]
        records = M.sweep(make, images, batches, threads, repeats=args.repeats, method=method)
        extra: dict[str, dict] = {}
        first = cache[threads[0]]
        ref = first[0].run(images[:64])
        for r in first:
            e = {k: r.info[k] for k in ("file_bytes", "weight_bytes") if k in r.info}
            e.update(ops)
            out = r.run(images[:64])
            e["argmax_agreement_vs_torch"] = float((out.argmax(1) == ref.argmax(1)).mean())
            if args.acc:
                n = min(args.acc, len(test_x))
                pred = np.concatenate([r.run(norm.apply(test_x[i:i + 256])).argmax(1)
                                       for i in range(0, n, 256)])
                e["acc"] = float((pred == test_y[:n]).mean())
            if args.rss:
                path = r.info.get("file")
                if r.name == "torch-fp32":
                    path = str(Path(tmp) / "twin.pt")
                    torch.save(B.float_twin(model), path)
                imports, setup = M.rss_snippets(r.name, path, r.threads)
                e.update(M.peak_rss(setup, imports))
            if r.name == "ort-int8":
                e["int8"] = {k: r.info[k] for k in ("reduce_range", "calibration_images",
                                                    "format", "per_channel")}
            extra[r.name] = e
    for rec in records:
        rec.update(extra.get(rec["system"], {}))
    print(f"{'system':>11} {'batch':>5} {'thr':>3} {'p50 ms':>9} {'p90 ms':>9} {'img/s':>9} "
          f"{'cpu ms':>8} {'vs torch':>8}")
    for rec in records:
        ref = next(r for r in records if r["system"] == "torch-fp32" and r["batch"] == rec["batch"]
                   and r["threads"] == rec["threads"])
        print(f"{rec['system']:>11} {rec['batch']:5d} {rec['threads']:3d} "
              f"{rec['latency_ms']['p50']:9.3f} {rec['latency_ms']['p90']:9.3f} "
              f"{rec['throughput']:9.1f} {rec['cpu_ms']:8.3f} "
              f"{ref['latency_ms']['p50'] / rec['latency_ms']['p50']:7.2f}x")
    if args.json:
        meta = {"cpu": cpu_name(), "vnni": B.has_vnni(), "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                "command": "lowbit " + " ".join(sys.argv[1:]) if sys.argv else ""}
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"meta": meta, "records": records}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0
