"""The video stage of ``lowbit demo`` (step 5 of :mod:`lowbit.demo`): synthetic training videos
of many seeds and one held-out video (a seed not trained on), a binary-backbone detector
trained for a few minutes and exported, ``track`` on the held-out video with its calibration
(annotated ``tracks.mp4``), scored by pycocotools / py-motmetrics / the true speeds, the MOG2
background-subtraction baseline on the same video, and the detector's latency against PyTorch /
ONNX Runtime fp32 / int8 of the same architecture (``bench.json``, records in the schema of
:mod:`lowbit.bench.report`, with the held-out mAP@0.5 as their ``quality``).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

__all__ = ["DETECT", "DETECT_QUICK", "METHOD", "detect_stage", "detect_table"]

METHOD = "bnn-detector"            # the method name of its benchmark records

# the video stage: training videos x every-th frame, epochs; held-out seed outside them.
# 240 videos x 12 frames, 8 epochs: ~190 CPU-s (2 threads); held-out mAP@0.5 0.58 on seed 1000
# (60 x 30 frames, 6 epochs: 0.41 in half the time; the 16-epoch, 5760-image width-32 detector:
# 0.74) -- docs/results.md "Demo (`make demo`)".  ``width`` 32, not ``detect train``'s 48:
# the demo keeps its 15-minute budget (the wider net costs about 2x the training time).
DETECT = {"videos": 240, "frames": 300, "every": 25, "val_videos": 2, "epochs": 8,
          "heldout_seed": 1000, "heldout_frames": 300, "width": 32}
DETECT_QUICK = {"videos": 2, "frames": 40, "every": 4, "val_videos": 1, "epochs": 1,
                "heldout_seed": 1000, "heldout_frames": 60, "width": 32}


def _data(out_dir: Path, cfg: dict, log) -> Path:
    """Training / validation videos (seeds 0..) and the held-out video; its folder."""
    from lowbit.data.synth import make_dataset, make_video
    t0 = time.perf_counter()
    n_train = cfg["videos"] + cfg["val_videos"]
    make_dataset(out_dir / "data", cfg["videos"], cfg["frames"], seed=0, every=cfg["every"],
                 val_videos=cfg["val_videos"], progress=False)
    held = out_dir / "heldout"
    make_video(held, cfg["heldout_frames"], cfg["heldout_seed"], progress=False)
    log(f"  synthetic data: {cfg['videos']} training + {cfg['val_videos']} validation videos "
        f"(seeds 0..{n_train - 1}, every {cfg['every']}th of {cfg['frames']} frames), held-out "
        f"video seed {cfg['heldout_seed']} ({cfg['heldout_frames']} frames) in "
        f"{time.perf_counter() - t0:.0f} s")
    return held


def _fit(out_dir: Path, cfg: dict, threads: int, log):
    """Train and export the default binary layout at ``cfg["width"]``; ``(result, model path,
    images, s)``."""
    import torch

    from lowbit.train.detect_command import load_data
    from lowbit.train.detect_fit import MODEL_DEFAULTS, MODEL_FILE, export_detector, fit_detector
    before = torch.get_num_threads()
    t0 = time.perf_counter()
    train, val = load_data(out_dir / "data")
    try:
        res = fit_detector(train, val, model="bnn",
                           model_args={**MODEL_DEFAULTS, "width": cfg["width"]},
                           epochs=cfg["epochs"], out_dir=out_dir / "train", overwrite=True,
                           threads=threads, progress=False)
    finally:
        torch.set_num_threads(before)
    train_s = time.perf_counter() - t0
    model = out_dir / MODEL_FILE
    export_detector(res.model, model, res.normalization, res.config["input_shape"],
                    res.config["classes"])
    last = res.history[-1]
    log(f"  trained a binary-backbone detector ({res.config['backbone']}, "
        f"{len(train.images)} images, {cfg['epochs']} epoch(s), {threads} thread(s)) in "
        f"{train_s:.0f} s: validation AP50 {last.get('val_ap50', float('nan')):.3f}; "
        f"{model} ({model.stat().st_size:,} bytes)")
    return res, model, int(len(train.images)), train_s


def _track(out_dir: Path, held: Path, model: Path) -> dict:
    """Track the held-out video with the detector and with MOG2; scores per kind."""
    from lowbit.detect.calibration import Calibration
    from lowbit.detect.metrics import evaluate_tracking
    from lowbit.detect.pipeline import build_detector, track_video
    from lowbit.detect.speed import SpeedEstimator
    cal = Calibration.from_file(held / "calib.json")
    stamps = held / "timestamps.json"
    results = {}
    for kind in ("model", "mog2"):
        run_dir = out_dir / ("track" if kind == "model" else "track-mog2")
        det = build_detector(kind, str(model), 1, 0.1, held / "video.mp4", stamps)
        track_video(held / "video.mp4", det, run_dir, cal, timestamps=stamps,
                    speed=SpeedEstimator(), video=kind == "model", progress=False)
        results[kind] = evaluate_tracking(run_dir, held, class_agnostic=kind == "mog2")
    return results


def detect_stage(out_dir, quick: bool = False, threads: int | None = None,
                 repeats: int = 15, log=print, settings: dict | None = None,
                 rss: bool = False) -> dict:
    """The stage of the module docstring in ``out_dir`` (replaced): returns the results (also
    written to ``out_dir/detect.json``).  ``threads``: torch training threads (default 2, or
    1 on a one-core machine); runtime, pipeline and benchmarks use 1 thread.  ``rss``: peak
    RSS of every system in a fresh process (``lowbit.bench.measure.peak_rss``)."""
    import os

    from lowbit.bench.model import summary_line, sweep_model

    cfg = {**(DETECT_QUICK if quick else DETECT), **(settings or {})}
    if cfg["videos"] + cfg["val_videos"] > cfg["heldout_seed"]:
        raise ValueError("the held-out seed must come after the training seeds")
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    held = _data(out_dir, cfg, log)
    train_threads = threads or min(2, os.cpu_count() or 1)
    res, model, n_images, train_s = _fit(out_dir, cfg, train_threads, log)
    results = _track(out_dir, held, model)
    bench = sweep_model(str(model), (1,), (1,), repeats=repeats, warmup=2,
                        checkpoint=str(out_dir / "train" / "checkpoint.pt"), method=METHOD,
                        progress=False, profile=False, rss=rss,
                        systems=("torch-fp32", "ort-fp32", "ort-int8"))
    bench["meta"]["command"] = "lowbit demo"
    for rec in bench["records"]:
        if rec["system"] == "lowbit":           # the baselines run the float twin: no score
            rec.update(quality=results["model"].get("map50"), quality_name="held-out mAP@0.5")
    (out_dir / "bench.json").write_text(json.dumps(bench, indent=1, default=str) + "\n")
    summary = {"settings": cfg, "train_seconds": train_s, "train_threads": train_threads,
               "train_images": n_images, "history": res.history,
               "model": str(model), "video": str(out_dir / "track" / "tracks.mp4"),
               "binary": results["model"], "mog2": results["mog2"],
               "latency": summary_line(bench["records"])}
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


