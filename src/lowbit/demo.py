"""``lowbit demo`` / ``make demo``: the main job end to end, small enough for a laptop.

1. train a float LeNet-5 and a binary LeNet-5 (``bnn-lenet5``) on a subset of Fashion-MNIST for
   a few epochs; Deep-Compress the float one with its tuned preset (``lowbit.train.compress``
   ``PRESETS``: gradual pruning with retraining, k-means sharing + centroid fine-tuning,
   Huffman); train a binary VGG-small (:data:`VGG`: conv-heavy, where the bitwise kernels
   pay) for one short epoch;
2. export each to a lowbit model file (``DIR/models``) and measure its test accuracy through
   the runtime (the code path of ``lowbit run FILE``);
3. benchmark each file against PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8 (static
   QDQ) of the same architecture (``lowbit bench model``: interleaved, batch 1 and a couple of
   batch sizes, 1 thread, peak RSS of every system in a fresh process) -> ``DIR/bench/*.json``;
4. the video application (``detect=True``, :mod:`lowbit.demo_detect`): a binary-backbone
   detector trained on synthetic videos, tracking and ground speed on a held-out video, MOG2
   on the same video, the detector's latency against the same baselines ->
   ``DIR/detect`` and ``DIR/bench/bnn-detector.json``;
5. ``lowbit report DIR/bench --out DIR/report`` (an outcome sentence per model, tables,
   plots) and a short table; ``DIR/demo.json`` has the accuracies, the wall and CPU time of
   every stage and the load average.

Training uses ``threads`` torch threads (default: 2, or 1 on a one-core machine); the
runtime, the baselines and every benchmark use 1 thread.  ``quick=True`` (tests): tiny subsets,
1 epoch, 2 repeats.  Output folder overwritten.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from lowbit.demo_detect import DETECT, DETECT_QUICK, detect_stage, detect_table  # noqa: F401

# binary VGG-small: architecture arguments, epochs and training images (a subset of the
# LeNet-5 ones); the accuracy is modest for so short a run -- the model is here for its speed
VGG = {"name": "bnn-vgg-small", "kwargs": {"width": 0.5}, "epochs": 1, "train_size": 10000}
VGG_QUICK = {**VGG, "kwargs": {"width": 0.25}, "train_size": 500}


class _Clock:
    """Wall and CPU seconds (this process and its children) per stage, and the load average."""

    def __init__(self):
        self.t0, self.stages, self._last = time.perf_counter(), {}, None
        self.load_start = _load()

    @staticmethod
    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), \
            resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def start(self, name: str) -> None:
        self._last = (name, time.perf_counter(), self.cpu())

    def stop(self) -> None:
        name, t, c = self._last
        self.stages[name] = {"wall_s": round(time.perf_counter() - t, 1),
                             "cpu_s": round(self.cpu() - c, 1)}

    def summary(self) -> dict:
        return {"wall_seconds": time.perf_counter() - self.t0, "cpu_seconds": self.cpu(),
                "load_average_start": self.load_start, "load_average_end": _load(),
                "stages": self.stages}


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _train(name, train, val, out_dir, epochs, device, threads, log, kwargs=None):
    from lowbit.train.loop import fit
    t0 = time.perf_counter()
    r = fit(name, train, val, epochs=epochs, seed=0, device=device, out_dir=out_dir,
            overwrite=True, progress=False, threads=threads, kwargs=kwargs)
    log(f"  trained {name}{'' if not kwargs else ' ' + str(kwargs)}: {epochs} epoch(s) on "
        f"{len(train[1])} images, {threads} thread(s), in {time.perf_counter() - t0:.0f} s")
    return Path(r.checkpoint)


def _export(checkpoint, path) -> None:
    from lowbit.train.checkpoint import load_model
    from lowbit.train.export import export_model
    model, meta = load_model(checkpoint)
    norm = meta.get("normalization")
    export_model(model, path, norm.to_dict() if norm is not None else None,
                 {"model": model.lowbit_spec, "source": str(checkpoint)})


def _compress(ck_float, path, train_size, quick, root, threads, out_p, log):
    """Deep Compression of the float LeNet-5 with its preset's epochs; the report dict."""
    from lowbit.train import compress as C
    t0 = time.perf_counter()
    opts = C.Options(huffman=True, progress=False, max_train=train_size or None,
                     max_test=1000 if quick else None, data=root, threads=threads)
    if quick:
        opts = dataclasses.replace(opts, prune_epochs=1, share_epochs=1)
    rep = C.run(str(ck_float), str(path), opts, str(out_p / "train" / "compress.json"))
    o = rep["options"]
    log(f"  compressed: {o['prune_epochs']} pruning + {o['share_epochs']} sharing epoch(s), "
        f"{rep['ratio_pqh']:.1f}x smaller than fp32, torch accuracy "
        f"{100 * rep['acc_float']:.2f} % -> {100 * rep['acc_compressed']:.2f} %, in "
        f"{time.perf_counter() - t0:.0f} s")
    return rep


def _models(train, val, out_p, epochs, device, threads, compress, quick, vgg, root, log,
            clock):
    """Step 1: train, compress, export; ``(files, float checkpoint, notes)``."""
    clock.start("train_lenet5")
    ck_float = _train("lenet5", train, val, out_p / "train" / "lenet5", epochs, device,
                      threads, log)
    ck_bnn = _train("bnn-lenet5", train, val, out_p / "train" / "bnn-lenet5", epochs, device,
                    threads, log)
    files = {"lenet5-float": out_p / "models" / "lenet5-float.lbm",
             "bnn-lenet5": out_p / "models" / "bnn-lenet5.lbm"}
    _export(ck_float, files["lenet5-float"])
    _export(ck_bnn, files["bnn-lenet5"])
    clock.stop()
    notes = []
    if compress:
        clock.start("deep_compression")
        log("  Deep Compression of the float LeNet-5 (its preset: gradual pruning, k-means "
            "sharing + fine-tuning, Huffman)")
        path = out_p / "models" / "lenet5-deep-compression.lbm"
        try:
            _compress(ck_float, path, len(train[1]), quick, root, threads, out_p, log)
            files["lenet5-deep-compression"] = path
        except Exception as e:  # noqa: BLE001 -- the demo goes on without it
            notes.append(f"Deep Compression skipped: {type(e).__name__}: {e}")
            log("  " + notes[-1])
        clock.stop()
    if vgg:
        from lowbit.data import subset
        clock.start("train_vgg")
        cfg = VGG_QUICK if quick else VGG
        vtrain = subset(*train, min(cfg["train_size"], len(train[1])), seed=1)
        ck = _train(cfg["name"], vtrain, val, out_p / "train" / cfg["name"], cfg["epochs"],
                    device, threads, log, kwargs=cfg["kwargs"])
        files[cfg["name"]] = out_p / "models" / f"{cfg['name']}.lbm"
        _export(ck, files[cfg["name"]])
        clock.stop()
    return files, ck_float, notes


def _bench(files, accs, ck_float, root, batches, repeats, out_p, log):
    """Step 3: one ``bench/<model>.json`` per file; ``{model: summary_line}``."""
    from lowbit.bench.model import summary_line, sweep_model
    summaries = {}
    for m, f in files.items():
        float_ck = str(ck_float) if m == "lenet5-float" else None
        res = sweep_model(str(f), batches, (1,), repeats=repeats, warmup=2,
                          data=root or "fashion-mnist", checkpoint=float_ck, method=m,
                          progress=False, rss=True, systems=("torch-fp32", "ort-fp32", "ort-int8"))
        res["meta"]["command"] = "lowbit demo"
        if m == "lenet5-deep-compression" and "lenet5-float" in accs:
            for rec in res["records"]:          # the model it was compressed from
                if rec["system"] == "lowbit":
                    rec.update(acc_reference=accs["lenet5-float"], reference_method="lenet5-float")
        (out_p / "bench" / f"{m}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        summaries[m] = summary_line(res["records"])
        s = summaries[m]
        log(f"  {m:<26} lowbit {s['lowbit_ms']:.3f} ms; vs torch {s.get('speedup', 0):.2f}x, "
            f"ORT fp32 {s.get('speedup_vs_ort_fp32', 0):.2f}x, ORT int8 "
            f"{s.get('speedup_vs_ort_int8', 0):.2f}x")
    return summaries


def _accuracies(files, root, log) -> dict:
    """Step 2: test accuracy of every file through the runtime (``lowbit run``'s code path)."""
    from lowbit.bench.model import runtime_accuracy
    accs = {}
    for m, f in files.items():
        accs[m] = runtime_accuracy(str(f), root)["acc"]
        log(f"  {m:<26} {100 * accs[m]:6.2f} %   {f.stat().st_size:>8,} bytes  {f}")
    return accs


def _detect(out_p, quick, threads, repeats, log):
    """Step 4: the video stage; its benchmark goes next to the others for the report."""
    det = detect_stage(out_p / "detect", quick=quick, threads=threads, repeats=repeats, log=log,
                       rss=True)
    shutil.copyfile(out_p / "detect" / "bench.json", out_p / "bench" / "bnn-detector.json")
    log("")
    for line in detect_table(det):
        log(line)
    log(f"annotated video: {det['video']}")
    return det


def _table(files, accs, summaries, log) -> None:
    log(f"{'model':<26} {'acc':>7} {'file':>9} {'lowbit ms':>9} {'torch':>7} {'ort32':>7} "
        f"{'int8':>7}  (batch 1, 1 thread, p50; speed-ups = their ms / lowbit ms)")
    for m, s in summaries.items():
        log(f"{m:<26} {100 * accs[m]:6.2f}% {files[m].stat().st_size:>9,} {s['lowbit_ms']:9.3f} "
            f"{s.get('speedup', 0):6.2f}x {s.get('speedup_vs_ort_fp32', 0):6.2f}x "
            f"{s.get('speedup_vs_ort_int8', 0):6.2f}x")


def main(out: str = "runs/demo", epochs: int = 2, device: str = "auto",
         threads: int | None = None, data: str | None = None, train_size: int = 20000,
         batches=(1, 16, 64), repeats: int = 15, compress: bool = True,
         quick: bool = False, detect: bool = True, vgg: bool = True) -> int:
    import lowbit.train.commands  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
    import torch

    from lowbit.bench import report
    from lowbit.data import DataError

    if quick:
        epochs, train_size, batches, repeats = 1, 1000, (1, 4), 2
    threads = threads or min(2, os.cpu_count() or 1)
    clock = _Clock()
    log = lambda m: print(m, flush=True)
    root = None if data in (None, "fashion-mnist") else data
    try:
        train, val = _dataset(root, quick, train_size)
    except DataError as e:
        print(f"lowbit demo: error: {e}", file=sys.stderr)
        return 2
    out_p = Path(out)
    for sub in ("models", "bench", "report", "train", "detect"):
        shutil.rmtree(out_p / sub, ignore_errors=True)
    for sub in ("models", "bench"):
        (out_p / sub).mkdir(parents=True, exist_ok=True)
    steps = 5 if detect else 4
    log(f"lowbit demo: Fashion-MNIST, {len(train[1])} training / {len(val[1])} validation images, "
        f"{epochs} epoch(s), training on {threads} thread(s), benchmarks on 1; load average "
        f"{clock.load_start}")

    log(f"[1/{steps}] training")
    files, ck_float, notes = _models(train, val, out_p, epochs, device, threads, compress,
                                     quick, vgg, root, log, clock)
    torch.set_num_threads(1)
    log(f"[2/{steps}] test accuracy through the lowbit runtime")
    clock.start("runtime_accuracy")
    accs = _accuracies(files, root, log)
    clock.stop()

    log(f"[3/{steps}] benchmarks: lowbit vs torch fp32 / ORT fp32 / ORT int8, batches "
        f"{list(batches)}, 1 thread, {repeats} repeats, peak RSS in fresh processes")
    clock.start("benchmarks")
    summaries = _bench(files, accs, ck_float, root, batches, repeats, out_p, log)
    clock.stop()
    det = None
    if detect:
        log(f"[4/{steps}] video: synthetic videos -> binary detector -> track -> speed "
            "(held-out video)")
        clock.start("video")
        det = _detect(out_p, quick, threads, repeats, log)
        clock.stop()

    log(f"[{steps}/{steps}] report")
    clock.start("report")
    report.main([str(out_p / "bench")], str(out_p / "report"))
    clock.stop()
    log("")
    _table(files, accs, summaries, log)
    for n in notes:
        log(n)
    t = clock.summary()
    log(f"\nreport: {out_p / 'report' / 'report.md'}  plots: {out_p / 'report'}/*.png  "
        f"JSON: {out_p / 'bench'}/*.json")
    log(f"({t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU in all; load average "
        f"{t['load_average_start']} at the start, {t['load_average_end']} at the end)")
    (out_p / "demo.json").write_text(json.dumps(
        {**t, "accuracy": accs, "files": {k: str(v) for k, v in files.items()},
         "epochs": epochs, "train_size": len(train[1]), "train_threads": threads,
         "vgg": (VGG_QUICK if quick else VGG) if vgg else None, "notes": notes,
         "detect": None if det is None else {k: det[k] for k in (
             "binary", "mog2", "latency", "video", "model", "train_seconds", "settings")}},
        indent=1, default=str) + "\n")
    return 0


def _dataset(root, quick: bool, train_size: int):
    """The training subset and the validation split (DataError when the data is missing)."""
    from lowbit.data import load, subset, train_val_split
    images, labels = load("train", root)
    load("test", root)
    train, val = train_val_split(images, labels, val_size=1000 if quick else 5000, seed=0)
    if train_size and train_size < len(train[1]):
        train = subset(*train, train_size, seed=0)
    return train, val
