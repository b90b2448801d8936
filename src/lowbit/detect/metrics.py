"""Detection, tracking and speed metrics, computed by the field's own libraries.

- COCO mAP@0.5 and mAP@0.5:0.95: ``pycocotools`` (``COCO`` objects built in memory,
  ``COCOeval`` on ``bbox``; its printing is captured);
- MOTA, IDF1, ID switches, MOTP, precision, recall: ``py-motmetrics`` (``MOTAccumulator``
  with 1 - IoU distances, pairs under IoU 0.5 refused; ``motmetrics.metrics``);
- speed error: the ground-truth / track pairs motmetrics matched in each frame, the track's
  estimated speed against ``truth.csv``'s speed of that object in that frame: mean absolute
  error (m/s) and that error relative to the mean true speed of the same pairs.

motmetrics 1.4's ``distances.iou_matrix`` calls ``np.asfarray`` (gone in NumPy 2), so the
distances come from its own ``distances.boxiou`` with the same 0.5 cut.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np

__all__ = ["coco_map", "mot_metrics", "matched_pairs", "speed_error", "format_table", "read_mot",
           "read_tracks",
           "read_detections", "read_truth", "evaluate_tracking", "eval_command"]


# -- readers ----------------------------------------------------------------------------
def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_mot(path, frame_base: int = 1) -> dict[int, dict]:
    """MOTChallenge ``frame,id,x,y,w,h,conf,class,visibility`` -> {0-based frame: {"ids",
    "xyxy", "class"}}."""
    out: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        v = line.split(",")
        f = int(float(v[0])) - frame_base
        x, y, w, h = map(float, v[2:6])
        d = out.setdefault(f, {"ids": [], "xyxy": [], "class": []})
        d["ids"].append(int(float(v[1])))
        d["xyxy"].append([x, y, x + w, y + h])
        d["class"].append(int(float(v[7])) if len(v) > 7 else 0)
    return {f: {k: np.asarray(a) for k, a in d.items()} for f, d in out.items()}


def _opt(v: str) -> float:
    return float(v) if v not in ("", None) else float("nan")


def read_tracks(path) -> dict[int, dict]:
    """A pipeline's ``tracks.csv`` -> {frame: {"ids", "xyxy", "class", "speed"}}."""
    out: dict[int, dict] = {}
    for r in _csv_rows(Path(path)):
        d = out.setdefault(int(r["frame"]), {"ids": [], "xyxy": [], "class": [], "speed": []})
        d["ids"].append(int(r["id"]))
        d["xyxy"].append([float(r[k]) for k in ("x1", "y1", "x2", "y2")])
        d["class"].append(int(r["class"]))
        d["speed"].append(_opt(r["speed"]))
    return {f: {k: np.asarray(a) for k, a in d.items()} for f, d in out.items()}


def read_detections(path) -> dict[int, dict]:
    """A pipeline's ``detections.csv`` -> {frame: {"xyxy", "class", "score"}}."""
    out: dict[int, dict] = {}
    for r in _csv_rows(Path(path)):
        d = out.setdefault(int(r["frame"]), {"xyxy": [], "class": [], "score": []})
        d["xyxy"].append([float(r[k]) for k in ("x1", "y1", "x2", "y2")])
        d["class"].append(int(r["class"]))
        d["score"].append(float(r["confidence"]))
    return {f: {k: np.asarray(a) for k, a in d.items()} for f, d in out.items()}


def read_truth(path, frame_base: int = 0) -> dict[tuple[int, int], float]:
    """``truth.csv`` -> {(0-based frame, object id): true speed m/s}."""
    return {(int(r["frame"]) - frame_base, int(r["id"])): float(r["speed"])
            for r in _csv_rows(Path(path))}


# -- COCO mAP ---------------------------------------------------------------------------
def coco_map(gt: dict, predictions: dict, frames=None, class_agnostic: bool = False) -> dict:
    """COCO bbox mAP by pycocotools.  ``gt``: {frame: {"xyxy", "class"}}; ``predictions``:
    {frame: {"xyxy", "class", "score"}} (or :class:`Detections`); ``frames``: the evaluated
    frames (default: every frame of either).  Returns ``{"map50", "map", "stats"}`` (the 12
    COCO numbers; NaN without ground truth)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    frames = sorted(set(gt) | set(predictions) if frames is None else set(frames))

    def parts(d):
        if hasattr(d, "xyxy") and hasattr(d, "confidence"):
            return d.xyxy, d.class_id, d.confidence
        return d["xyxy"], d["class"], d.get("score")

    def cat(c):
        return 1 if class_agnostic else int(c) + 1

    anns, cats = [], set()
    for f in frames:
        if f in gt:
            for b, c in zip(*parts(gt[f])[:2]):
                x1, y1, x2, y2 = map(float, b)
                anns.append({"id": len(anns) + 1, "image_id": int(f), "category_id": cat(c),
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                             "iscrowd": 0})
                cats.add(cat(c))
    dets = []
    for f in frames:
        if f in predictions:
            xyxy, cls, score = parts(predictions[f])
            for b, c, s in zip(xyxy, cls, score):
                x1, y1, x2, y2 = map(float, b)
                dets.append({"image_id": int(f), "category_id": cat(c),
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)})
                cats.add(cat(c))
    if not anns:
        return {"map50": float("nan"), "map": float("nan"), "stats": [float("nan")] * 12}
    if not dets:
        return {"map50": 0.0, "map": 0.0, "stats": [0.0] * 12}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": [{"id": int(f)} for f in frames], "annotations": anns,
                           "categories": [{"id": c, "name": str(c)} for c in sorted(cats)]}
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats]
    return {"map50": stats[1], "map": stats[0], "stats": stats}


# -- MOT metrics ------------------------------------------------------------------------
def _iou_distances(gt_xyxy, hyp_xyxy, max_d: float = 0.5) -> np.ndarray:
    import motmetrics as mm

    g = np.asarray(gt_xyxy, np.float64).reshape(-1, 4)
    h = np.asarray(hyp_xyxy, np.float64).reshape(-1, 4)
    if not len(g) or not len(h):
        return np.empty((len(g), len(h)))
    xywh = [np.c_[a[:, :2], a[:, 2:] - a[:, :2]] for a in (g, h)]
    d = 1.0 - mm.distances.boxiou(xywh[0][:, None], xywh[1][None, :])
    return np.where(d > max_d, np.nan, d)


MOT_NAMES = ["mota", "idf1", "num_switches", "motp", "precision", "recall",
             "num_false_positives", "num_misses", "num_objects", "mostly_tracked",
             "num_unique_objects"]


def mot_metrics(gt: dict, hyp: dict, frames=None, iou: float = 0.5):
    """``(metrics dict, accumulator)`` by py-motmetrics; ``gt`` / ``hyp``: {frame: {"ids",
    "xyxy"}} (frames of neither dict count as empty).  MOTP is the mean 1 - IoU of matches."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    empty = {"ids": np.zeros(0, np.int64), "xyxy": np.zeros((0, 4))}
    for f in sorted(set(gt) | set(hyp) if frames is None else set(frames)):
        g, h = gt.get(f, empty), hyp.get(f, empty)
        acc.update([int(i) for i in g["ids"]], [int(i) for i in h["ids"]],
                   _iou_distances(g["xyxy"], h["xyxy"], 1.0 - iou), frameid=int(f))
    res = mm.metrics.create().compute(acc, metrics=MOT_NAMES, name="all")
    return {k: float(res[k].iloc[0]) for k in MOT_NAMES}, acc


def matched_pairs(acc) -> list[tuple[int, int, int]]:
    """(frame, ground-truth id, track id) of every match motmetrics made (switches too)."""
    ev = acc.mot_events
    ev = ev[ev["Type"].isin(["MATCH", "SWITCH"])]
    frames = ev.index.get_level_values(0)
    return [(int(f), int(o), int(h)) for f, o, h in zip(frames, ev["OId"], ev["HId"])]


def speed_error(pairs, truth: dict, estimates: dict) -> dict:
    """``pairs``: (frame, truth id, track id); ``truth``: {(frame, truth id): m/s};
    ``estimates``: {(frame, track id): m/s or NaN}.  MAE over the pairs with both, the MAE
    relative to those pairs' mean true speed, and the share of pairs with an estimate."""
    err, true = [], []
    for f, o, h in pairs:
        est, tru = estimates.get((f, h), float("nan")), truth.get((f, o), float("nan"))
        if np.isfinite(est) and np.isfinite(tru):
            err.append(abs(est - tru))
            true.append(tru)
    if not err:
        return {"speed_mae": float("nan"), "speed_rel_error": float("nan"),
                "speed_pairs": 0, "speed_coverage": 0.0}
    mae = float(np.mean(err))
    return {"speed_mae": mae, "speed_rel_error": mae / float(np.mean(true)),
            "speed_pairs": len(err), "speed_coverage": len(err) / max(len(pairs), 1)}


# -- a pipeline run against a synthetic folder -------------------------------------------
SYNTH_FILES = ("gt.txt", "truth.csv")
TRACK_FILES = ("tracks.csv", "detections.csv", "summary.json")


def _need(folder: Path, names) -> None:
    for n in names:
        if not (folder / n).is_file():
            raise FileNotFoundError(f"{folder / n}: file not found")


def evaluate_tracking(track_dir, synth_dir, class_agnostic: bool = False) -> dict:
    """Score the outputs of ``track_video`` in ``track_dir`` against the ground truth of a
    ``lowbit.data.synth`` folder: mAP@0.5 / mAP@0.5:0.95 of ``detections.csv``, MOTA / IDF1
    / ID switches of ``tracks.csv``, speed error, and the pipeline's fps."""
    track_dir, synth_dir = Path(track_dir), Path(synth_dir)
    _need(synth_dir, SYNTH_FILES)
    _need(track_dir, TRACK_FILES)
    meta = json.loads((synth_dir / "meta.json").read_text()) \
        if (synth_dir / "meta.json").is_file() else {}
    base = {"gt.txt": 1, "truth.csv": 0, **meta.get("frame_base", {})}
    summary = json.loads((track_dir / "summary.json").read_text())
    frames = range(int(summary["frames"]))            # only the frames the run saw
    gt = {f: d for f, d in read_mot(synth_dir / "gt.txt", base["gt.txt"]).items()
          if f in frames}
    tracks = read_tracks(track_dir / "tracks.csv")
    det = coco_map(gt, read_detections(track_dir / "detections.csv"), frames, class_agnostic)
    mot, acc = mot_metrics(gt, tracks, frames)
    estimates = {(f, int(i)): float(s) for f, d in tracks.items()
                 for i, s in zip(d["ids"], d["speed"])}
    speed = speed_error(matched_pairs(acc), read_truth(synth_dir / "truth.csv",
                                                       base["truth.csv"]), estimates)
    return {"map50": det["map50"], "map": det["map"], "mota": mot["mota"],
            "idf1": mot["idf1"], "id_switches": int(mot["num_switches"]), **speed,
            "motp": mot["motp"], "precision": mot["precision"], "recall": mot["recall"],
            "fps": summary.get("fps"), "frames": int(summary["frames"]),
            "timings_s": summary.get("timings_s", {})}


def format_table(res: dict) -> str:
    def num(v, fmt):
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) \
            else format(v, fmt)

    rows = [("mAP@0.5", num(res["map50"], ".3f")), ("mAP@0.5:0.95", num(res["map"], ".3f")),
            ("MOTA", num(res["mota"], ".3f")), ("IDF1", num(res["idf1"], ".3f")),
            ("ID switches", str(res["id_switches"])),
            ("speed MAE (m/s)", num(res["speed_mae"], ".3f")),
            ("speed error (relative)", num(res["speed_rel_error"], ".1%")),
            ("speed coverage", num(res["speed_coverage"], ".1%")),
            ("fps", num(res["fps"], ".1f"))]
    return "\n".join(f"{k:<24}{v:>10}" for k, v in rows)


def eval_command(model, data_dir, threads: int = 1, detector: str = "model",
                 threshold: float = 0.1, max_speed: float = 60.0, track_thresh: float = 0.5,
                 out=None, limit: int | None = None, progress: bool | None = None,
                 colour: bool = True, tta: bool = False) -> int:
    """``lowbit detect eval [MODEL] DATA_DIR``: run detection + tracking on a synthetic
    folder's video and print the metrics table; 0, or 2 after one
    ``lowbit detect eval: error: ...`` line for a user error.  ``out``: keep the run's files
    (and ``eval.json``) there; default a temporary folder."""
    import tempfile

    from lowbit.data.idx import DataError
    from lowbit.detect.calibration import Calibration, CalibrationError
    from lowbit.detect.pipeline import build_detector, check_common, fail, track_video
    from lowbit.detect.speed import SpeedEstimator

    cmd = "detect eval"
    bad = check_common(threads, threshold, max_speed, "km/h", track_thresh)
    if bad is None and limit is not None and limit < 1:
        bad = f"--limit: expected >= 1, got {limit}"
    if bad:
        return fail(cmd, bad)
    data_dir = Path(data_dir)
    try:
        _need(data_dir, ("video.mp4", "calib.json", *SYNTH_FILES))
        cal = Calibration.from_file(data_dir / "calib.json")
        stamps = data_dir / "timestamps.json"
        stamps = stamps if stamps.is_file() else None
        det = build_detector(detector, model, threads, threshold, data_dir / "video.mp4", stamps,
                             tta=tta)
        with contextlib.ExitStack() as stack:
            run_dir = Path(out) if out else Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="lowbit-eval-")))
            track_video(data_dir / "video.mp4", det, run_dir, cal,
                        timestamps=stamps,
                        track_thresh=track_thresh, colour=colour,
                        speed=SpeedEstimator(max_speed=max_speed), video=bool(out),
                        limit=limit, progress=progress)
            res = evaluate_tracking(run_dir, data_dir, class_agnostic=detector == "mog2")
            if out:
                (run_dir / "eval.json").write_text(json.dumps(res, indent=2) + "\n")
    except (CalibrationError, DataError, ValueError, OSError) as e:
        return fail(cmd, str(e) or type(e).__name__)
    print(format_table(res))
    return 0

