"""``lowbit demo`` / ``make demo``: the main job end to end, small enough for a laptop.

1. train a float LeNet-5, a binary LeNet-5 (``bnn-lenet5``) on a subset of Fashion-MNIST for
   a few epochs, and Deep-Compress the float one (prune -> share -> Huffman, short schedule);
2. export each to a lowbit model file (``DIR/models``) and measure its test accuracy through
   the runtime (the code path of ``lowbit run FILE``);
3. benchmark each file against PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8 (static
   QDQ) of the same architecture (``lowbit bench model``: interleaved, batch 1 and a couple of
   batch sizes, 1 thread) -> ``DIR/bench/*.json``;
4. ``lowbit report DIR/bench --out DIR/report`` and a short table;
5. the video application (``detect=True``, :func:`detect_stage`): synthetic training videos
   of many seeds and one held-out video (a seed not trained on), a binary-backbone detector
   trained for a few minutes and exported, ``track`` on the held-out video with its
   calibration (annotated ``tracks.mp4``), scored by pycocotools / py-motmetrics / the true
   speeds, the MOG2 background-subtraction baseline on the same video, and the detector's
   latency against PyTorch / ONNX Runtime fp32 / int8 of the same architecture
   -> ``DIR/detect``, a table and the annotated video's path.

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


# the video stage: training videos x every-th frame, epochs; held-out seed outside them
DETECT = {"videos": 60, "frames": 300, "every": 10, "val_videos": 2, "epochs": 6,
          "heldout_seed": 1000, "heldout_frames": 300}
DETECT_QUICK = {"videos": 2, "frames": 40, "every": 4, "val_videos": 1, "epochs": 1,
                "heldout_seed": 1000, "heldout_frames": 60}


def detect_stage(out_dir, quick: bool = False, threads: int | None = None,
                 repeats: int = 15, log=print, settings: dict | None = None) -> dict:
    """Step 5 of the module docstring in ``out_dir`` (replaced): returns the results (also
    written to ``out_dir/detect.json``).  ``threads``: torch training threads (default 2, or
    1 on a one-core machine); runtime, pipeline and benchmarks use 1 thread."""
    import os

    import torch

    from lowbit.bench.model import summary_line, sweep_model
    from lowbit.data.synth import make_dataset, make_video
    from lowbit.detect.calibration import Calibration
    from lowbit.detect.metrics import evaluate_tracking
    from lowbit.detect.pipeline import build_detector, track_video
    from lowbit.detect.speed import SpeedEstimator
    from lowbit.train.detect_fit import (MODEL_DEFAULTS, MODEL_FILE, export_detector,
                                         fit_detector, load_data)

    cfg = {**(DETECT_QUICK if quick else DETECT), **(settings or {})}
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    n_train = cfg["videos"] + cfg["val_videos"]
    if n_train > cfg["heldout_seed"]:
        raise ValueError("the held-out seed must come after the training seeds")
    make_dataset(out_dir / "data", cfg["videos"], cfg["frames"], seed=0, every=cfg["every"],
                 val_videos=cfg["val_videos"], progress=False)
    held = out_dir / "heldout"
    make_video(held, cfg["heldout_frames"], cfg["heldout_seed"], progress=False)
    log(f"  synthetic data: {cfg['videos']} training + {cfg['val_videos']} validation videos "
        f"(seeds 0..{n_train - 1}, every {cfg['every']}th frame), held-out video seed "
        f"{cfg['heldout_seed']} ({cfg['heldout_frames']} frames) in "
        f"{time.perf_counter() - t0:.0f} s")

    train_threads = threads or min(2, os.cpu_count() or 1)
    before = torch.get_num_threads()
    t0 = time.perf_counter()
    train, val = load_data(out_dir / "data")
    try:
        res = fit_detector(train, val, model="bnn", model_args=dict(MODEL_DEFAULTS),
                           epochs=cfg["epochs"], out_dir=out_dir / "train", overwrite=True,
                           threads=train_threads, progress=False)
    finally:
        torch.set_num_threads(before)
    train_s = time.perf_counter() - t0
    model = out_dir / MODEL_FILE
    export_detector(res.model, model, res.normalization, res.config["input_shape"],
                    res.config["classes"])
    last = res.history[-1]
    log(f"  trained a binary-backbone detector ({res.config['backbone']}, "
        f"{len(train.images)} images, {cfg['epochs']} epoch(s), {train_threads} thread(s)) in "
        f"{train_s:.0f} s: validation AP50 {last.get('val_ap50', float('nan')):.3f}; "
        f"{model} ({model.stat().st_size:,} bytes)")

    cal = Calibration.from_file(held / "calib.json")
    stamps = held / "timestamps.json"
    results = {}
    for kind in ("model", "mog2"):
        run_dir = out_dir / ("track" if kind == "model" else "track-mog2")
        det = build_detector(kind, str(model), 1, 0.1, held / "video.mp4", stamps)
        track_video(held / "video.mp4", det, run_dir, cal, timestamps=stamps,
                    speed=SpeedEstimator(), video=kind == "model", progress=False)
        results[kind] = evaluate_tracking(run_dir, held, class_agnostic=kind == "mog2")
    bench = sweep_model(str(model), (1,), (1,), repeats=repeats, warmup=2,
                        checkpoint=str(out_dir / "train" / "checkpoint.pt"), method="detector",
                        progress=False, profile=False,
                        systems=("torch-fp32", "ort-fp32", "ort-int8"))
    (out_dir / "bench.json").write_text(json.dumps(bench, indent=1, default=str) + "\n")
    lat = summary_line(bench["records"])
    summary = {"settings": cfg, "train_seconds": train_s, "train_threads": train_threads,
               "train_images": int(len(train.images)), "history": res.history,
               "model": str(model), "video": str(out_dir / "track" / "tracks.mp4"),
               "binary": results["model"], "mog2": results["mog2"], "latency": lat}
    (out_dir / "detect.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def detect_table(r: dict) -> list[str]:
    """The video stage's table (binary detector vs MOG2; latency vs the baselines)."""
    def f(v, fmt):
        return "-" if v is None or v != v else format(v, fmt)
    b, m, lat = r["binary"], r["mog2"], r["latency"]
    rows = [("mAP@0.5 (MOG2: class-agnostic)", "map50", ".3f"), ("mAP@0.5:0.95", "map", ".3f"),
            ("MOTA", "mota", ".3f"), ("IDF1", "idf1", ".3f"), ("ID switches", "id_switches", "d"),
            ("speed MAE (m/s)", "speed_mae", ".2f"), ("speed error (of mean speed)",
                                                     "speed_rel_error", ".1%"),
            ("pipeline fps (1 core)", "fps", ".0f")]
    lines = [f"{'held-out video':<32} {'binary det.':>12} {'MOG2':>10}"]
    lines += [f"{name:<32} {f(b.get(k), fmt):>12} {f(m.get(k), fmt):>10}" for name, k, fmt in rows]
    lines.append(f"detector latency, batch 1, 1 thread: lowbit {lat.get('lowbit_ms', 0):.3f} ms; "
                 f"vs PyTorch fp32 {lat.get('speedup', 0):.2f}x, ORT fp32 "
                 f"{lat.get('speedup_vs_ort_fp32', 0):.2f}x, ORT int8 "
                 f"{lat.get('speedup_vs_ort_int8', 0):.2f}x (their ms / lowbit ms)")
    return lines


def main(out: str = "runs/demo", epochs: int = 2, device: str = "auto",
         threads: int | None = None, data: str | None = None, train_size: int = 20000,
         batches=(1, 16, 64), repeats: int = 15, compress: bool = True,
         quick: bool = False, detect: bool = True) -> int:
    import lowbit.train.commands  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
    import torch

    from lowbit.bench import report
    from lowbit.bench.model import runtime_accuracy, summary_line, sweep_model
    from lowbit.data import DataError, load, subset, train_val_split

    if quick:
        epochs, train_size, batches, repeats = 1, 1000, (1, 4), 2
    steps = 5 if detect else 4
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
    log(f"[1/{steps}] training")
    ck_float = _train("lenet5", train, val, out_p / "train" / "lenet5", epochs, device, log)
    ck_bnn = _train("bnn-lenet5", train, val, out_p / "train" / "bnn-lenet5", epochs, device, log)
    files = {"lenet5-float": out_p / "models" / "lenet5-float.lbm",
             "bnn-lenet5": out_p / "models" / "bnn-lenet5.lbm"}
    _export(ck_float, files["lenet5-float"])
    _export(ck_bnn, files["bnn-lenet5"])
    dc_note = None
    if compress:
        log(f"[1b/{steps}] Deep Compression of the float LeNet-5 (prune 1 step, share, "
            "Huffman)")
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
    log(f"[2/{steps}] test accuracy through the lowbit runtime")
    accs = {}
    for m, f in files.items():
        accs[m] = runtime_accuracy(str(f), root)["acc"]
        log(f"  {m:<26} {100 * accs[m]:6.2f} %   {f.stat().st_size:>8,} bytes  {f}")

    # 3. benchmarks against the baselines
    log(f"[3/{steps}] benchmarks: lowbit vs torch fp32 / ORT fp32 / ORT int8, batches "
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
    log(f"[4/{steps}] report")
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
        f"JSON: {out_p / 'bench'}/*.json  ({wall:.0f} s so far)")

    # 5. the video application
    det = None
    if detect:
        log(f"\n[5/{steps}] video: synthetic videos -> binary detector -> track -> speed "
            "(held-out video)")
        det = detect_stage(out_p / "detect", quick=quick, threads=threads,
                           repeats=repeats, log=log)
        log("")
        for line in detect_table(det):
            log(line)
        log(f"annotated video: {det['video']}")
    wall = time.perf_counter() - t_start
    log(f"({wall:.0f} s in all)")
    (out_p / "demo.json").write_text(json.dumps(
        {"wall_seconds": wall, "accuracy": accs, "files": {k: str(v) for k, v in files.items()},
         "epochs": epochs, "train_size": len(train[1]), "note": dc_note,
         "detect": None if det is None else {k: det[k] for k in (
             "binary", "mog2", "latency", "video", "model", "train_seconds")}},
        indent=1, default=str) + "\n")
    return 0
