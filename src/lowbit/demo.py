"""``lowbit demo`` / ``make demo``: the main job end to end, small enough for a laptop.

1. train a float LeNet-5, a binary LeNet-5 (``bnn-lenet5``) on a subset of Fashion-MNIST for
   a few epochs, and Deep-Compress the float one (prune -> share -> Huffman, short schedule);
2. export each to a lowbit model file (``DIR/models``) and measure its test accuracy through
   the runtime (the code path of ``lowbit run FILE``);
3. benchmark each file against PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8 (static
   QDQ) of the same architecture (``lowbit bench model``: interleaved, batch 1 and a couple of
   batch sizes, 1 thread) -> ``DIR/bench/*.json``;
4. ``lowbit report DIR/bench --out DIR/report`` and a short table.

``quick=True`` (tests): tiny subsets, 1 epoch, 2 repeats.  Output folder overwritten.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path


def _train(name, train, val, out_dir, epochs, device, log):
    from lowbit.train.loop import fit
    t0 = time.perf_counter()
    r = fit(name, train, val, epochs=epochs, seed=0, device=device, out_dir=out_dir,
            overwrite=True, progress=False)
    log(f"  trained {name}: {epochs} epoch(s) on {len(train[1])} images in "
        f"{time.perf_counter() - t0:.0f} s")
    return Path(r.checkpoint)


def _export(checkpoint, path) -> None:
    from lowbit.train.checkpoint import load_model
    from lowbit.train.export import export_model
    model, meta = load_model(checkpoint)
    norm = meta.get("normalization")
    export_model(model, path, norm.to_dict() if norm is not None else None,
                 {"model": model.lowbit_spec, "source": str(checkpoint)})


def main(out: str = "runs/demo", epochs: int = 2, device: str = "auto",
         threads: int | None = None, data: str | None = None, train_size: int = 20000,
         batches=(1, 16, 64), repeats: int = 15, compress: bool = True,
         quick: bool = False) -> int:
    import lowbit.train.commands  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
    import torch

    from lowbit.bench import report
    from lowbit.bench.model import runtime_accuracy, summary_line, sweep_model
    from lowbit.data import DataError, load, subset, train_val_split

    if quick:
        epochs, train_size, batches, repeats = 1, 1000, (1, 4), 2
    torch.set_num_threads(threads or 1)
    t_start = time.perf_counter()
    log = lambda m: print(m, flush=True)
    root = None if data in (None, "fashion-mnist") else data
    try:
        images, labels = load("train", root)
        load("test", root)
    except DataError as e:
        print(f"lowbit demo: error: {e}", file=sys.stderr)
        return 2
    out_p = Path(out)
    for sub in ("models", "bench", "report", "train"):
        shutil.rmtree(out_p / sub, ignore_errors=True)
    (out_p / "models").mkdir(parents=True, exist_ok=True)
    train, val = train_val_split(images, labels, val_size=1000 if quick else 5000, seed=0)
    if train_size and train_size < len(train[1]):
        train = subset(*train, train_size, seed=0)
    log(f"lowbit demo: Fashion-MNIST, {len(train[1])} training / {len(val[1])} validation images, "
        f"{epochs} epoch(s), {torch.get_num_threads()} thread(s)")

    # 1-2. train, compress, export
    log("[1/4] training")
    ck_float = _train("lenet5", train, val, out_p / "train" / "lenet5", epochs, device, log)
    ck_bnn = _train("bnn-lenet5", train, val, out_p / "train" / "bnn-lenet5", epochs, device, log)
    files = {"lenet5-float": out_p / "models" / "lenet5-float.lbm",
             "bnn-lenet5": out_p / "models" / "bnn-lenet5.lbm"}
    _export(ck_float, files["lenet5-float"])
    _export(ck_bnn, files["bnn-lenet5"])
    dc_note = None
    if compress:
        log("[1b/4] Deep Compression of the float LeNet-5 (prune 1 step, share, Huffman)")
        try:
            from lowbit.train import compress as C
            t0 = time.perf_counter()
            path = out_p / "models" / "lenet5-deep-compression.lbm"
            rep = C.run(str(ck_float), str(path), C.Options(
                prune_steps=1, prune_epochs=1, share_epochs=1, huffman=True, progress=False,
                max_train=train_size or None, max_test=1000 if quick else None, data=root,
                threads=threads or 1), str(out_p / "train" / "compress.json"))
            files["lenet5-deep-compression"] = path
            log(f"  compressed: {rep['ratio_pqh']:.1f}x smaller than fp32 in "
                f"{time.perf_counter() - t0:.0f} s")
        except Exception as e:  # noqa: BLE001 -- the demo goes on without it
            dc_note = f"Deep Compression skipped: {type(e).__name__}: {e}"
            log("  " + dc_note)

    # 2. runtime accuracy (lowbit run's code path)
    log("[2/4] test accuracy through the lowbit runtime")
    accs = {}
    for m, f in files.items():
        accs[m] = runtime_accuracy(str(f), root)["acc"]
        log(f"  {m:<26} {100 * accs[m]:6.2f} %   {f.stat().st_size:>8,} bytes  {f}")

    # 3. benchmarks against the baselines
    log(f"[3/4] benchmarks: lowbit vs torch fp32 / ORT fp32 / ORT int8, batches "
        f"{list(batches)}, 1 thread, {repeats} repeats")
    (out_p / "bench").mkdir(parents=True, exist_ok=True)
    summaries = {}
    for m, f in files.items():
        float_ck = str(ck_float) if m == "lenet5-float" else None
        res = sweep_model(str(f), batches, (1,), repeats=repeats, warmup=2, data=root or "fashion-mnist",
                          checkpoint=float_ck, method=m, progress=False,
                          systems=("torch-fp32", "ort-fp32", "ort-int8"))
        res["meta"]["command"] = "lowbit demo"
        (out_p / "bench" / f"{m}.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        summaries[m] = (res["records"], summary_line(res["records"]))

    # 4. report
    log("[4/4] report")
    report.main([str(out_p / "bench")], str(out_p / "report"))
    wall = time.perf_counter() - t_start
    log("")
    log(f"{'model':<26} {'acc':>7} {'file':>9} {'lowbit ms':>9} {'torch':>7} {'ort32':>7} "
        f"{'int8':>7}  (batch 1, 1 thread, p50; speed-ups = their ms / lowbit ms)")
    for m, (recs, s) in summaries.items():
        log(f"{m:<26} {100 * accs[m]:6.2f}% {files[m].stat().st_size:>9,} {s['lowbit_ms']:9.3f} "
            f"{s.get('speedup', 0):6.2f}x {s.get('speedup_vs_ort_fp32', 0):6.2f}x "
            f"{s.get('speedup_vs_ort_int8', 0):6.2f}x")
    if dc_note:
        log(dc_note)
    log(f"\nreport: {out_p / 'report' / 'report.md'}  plots: {out_p / 'report'}/*.png  "
        f"JSON: {out_p / 'bench'}/*.json  ({wall:.0f} s in all)")
    (out_p / "demo.json").write_text(json.dumps(
        {"wall_seconds": wall, "accuracy": accs, "files": {k: str(v) for k, v in files.items()},
         "epochs": epochs, "train_size": len(train[1]), "note": dc_note}, indent=1) + "\n")
    return 0
