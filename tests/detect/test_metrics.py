"""Metrics come from pycocotools and py-motmetrics: 1.0 / no error on perfect predictions,
known lower values on perturbed ones, and the same numbers as the libraries' own entry points
(pycocotools from JSON files, motmetrics' accumulator used directly)."""
import csv
import json

import numpy as np
import pytest

pytest.importorskip("pycocotools")
mm = pytest.importorskip("motmetrics")

from lowbit.detect.detections import Detections
from lowbit.detect.metrics import (coco_map, evaluate_tracking, format_table, matched_pairs,
                                   mot_metrics, read_mot, speed_error)

N = 10                                            # frames


def _truth():
    """Two objects over N frames: id 1 (class 0) moves right, id 2 (class 1) moves down."""
    gt = {}
    for f in range(N):
        gt[f] = {"ids": np.array([1, 2]), "class": np.array([0, 1]),
                 "xyxy": np.array([[10 + 4 * f, 20, 30 + 4 * f, 60],
                                   [100, 10 + 3 * f, 140, 40 + 3 * f]], float)}
    return gt


def _preds(gt, keep=lambda f, k: True, score=lambda f, k: 0.9):
    return {f: {"xyxy": d["xyxy"][[k for k in range(2) if keep(f, k)]],
                "class": d["class"][[k for k in range(2) if keep(f, k)]],
                "score": np.array([score(f, k) for k in range(2) if keep(f, k)])}
            for f, d in gt.items()}


def _pycocotools_from_files(tmp_path, gt, preds):
    """The library's ordinary path: JSON files on disk, COCO(file), loadRes(file)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images = [{"id": f} for f in gt]
    anns = [{"id": i + 1, "image_id": f, "category_id": int(c) + 1,
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
             "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0}
            for i, (f, b, c) in enumerate((f, b, c) for f, d in gt.items()
                                           for b, c in zip(d["xyxy"].tolist(), d["class"]))]
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    res = [{"image_id": f, "category_id": int(c) + 1, "score": float(s),
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
           for f, d in preds.items() for b, c, s in zip(d["xyxy"].tolist(), d["class"],
                                                         d["score"])]
    (tmp_path / "res.json").write_text(json.dumps(res))
    coco = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(coco, coco.loadRes(str(tmp_path / "res.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def test_map_perfect_and_half_dropped(tmp_path):
    gt = _truth()
    perfect = coco_map(gt, _preds(gt))
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map"] == pytest.approx(1.0)
    half = coco_map(gt, _preds(gt, keep=lambda f, k: f % 2 == 0))
    # recall stops at 0.5 with precision 1: 51 of COCO's 101 recall points
    assert half["map50"] == pytest.approx(51 / 101) and half["map"] == pytest.approx(51 / 101)
    ref = _pycocotools_from_files(tmp_path, gt, _preds(gt, keep=lambda f, k: f % 2 == 0))
    assert half["stats"] == pytest.approx(list(ref))


def test_map_shifted_boxes_and_wrong_scores_match_pycocotools(tmp_path):
    gt = _truth()
    rng = np.random.default_rng(0)
    preds = _preds(gt, score=lambda f, k: float(rng.uniform(0.1, 1)))
    for f, d in preds.items():
        d["xyxy"] = d["xyxy"] + rng.normal(0, 2.5, d["xyxy"].shape)
    preds[3]["xyxy"] = np.r_[preds[3]["xyxy"], [[200, 200, 230, 230]]]     # a false positive
    preds[3]["class"] = np.r_[preds[3]["class"], 0]
    preds[3]["score"] = np.r_[preds[3]["score"], 0.95]
    ours = coco_map(gt, preds)
    assert ours["stats"] == pytest.approx(list(_pycocotools_from_files(tmp_path, gt, preds)))
    assert ours["map"] < ours["map50"] < 1.0


def test_map_takes_detections_and_handles_empty():
    gt = _truth()
    dets = {f: Detections(d["xyxy"], [0.8, 0.7], d["class"]) for f, d in gt.items()}
    assert coco_map(gt, dets)["map50"] == pytest.approx(1.0)
    assert coco_map(gt, {})["map50"] == 0.0
    assert np.isnan(coco_map({}, dets)["map"])
    wrong_class = {f: Detections(d["xyxy"], [0.8, 0.7], 1 - d["class"]) for f, d in gt.items()}
    assert coco_map(gt, wrong_class)["map50"] == 0.0
    assert coco_map(gt, wrong_class, class_agnostic=True)["map50"] == pytest.approx(1.0)


def _hyp(gt, swap_from=None, drop=lambda f, k: False):
    out = {}
    for f, d in gt.items():
        ids = np.array([11, 12]) if swap_from is None or f < swap_from else np.array([12, 11])
        keep = [k for k in range(2) if not drop(f, k)]
        out[f] = {"ids": ids[keep], "xyxy": d["xyxy"][keep] + 1.0}
    return out


def test_mot_metrics_perfect_swapped_and_missing():
    gt = _truth()
    perfect, _ = mot_metrics(gt, _hyp(gt))
    assert perfect["mota"] == 1.0 and perfect["idf1"] == 1.0 and perfect["num_switches"] == 0
    swapped, acc = mot_metrics(gt, _hyp(gt, swap_from=5))
    assert swapped["num_switches"] == 2
    assert swapped["mota"] == pytest.approx(1 - 2 / 20)             # 2 switches / 20 objects
    assert swapped["idf1"] == pytest.approx(0.5)                     # 5 of 10 frames each
    missing, _ = mot_metrics(gt, _hyp(gt, drop=lambda f, k: k == 1 and f % 2))
    assert missing["mota"] == pytest.approx(1 - 5 / 20) and missing["recall"] == 0.75
    # the same numbers as motmetrics' own iou_matrix-free accumulator on the same pairs
    direct = mm.metrics.create().compute(acc, metrics=["mota", "idf1"], name="x")
    assert swapped["mota"] == direct["mota"].iloc[0] and swapped["idf1"] == direct["idf1"].iloc[0]


def test_speed_error_from_motmetrics_matches():
    gt = _truth()
    _, acc = mot_metrics(gt, _hyp(gt, swap_from=5))
    pairs = matched_pairs(acc)
    assert len(pairs) == 20 and (5, 1, 12) in pairs and (4, 1, 11) in pairs
    truth = {(f, o): 10.0 * o for f in range(N) for o in (1, 2)}    # 10 and 20 m/s
    exact = {(f, h): truth[(f, o)] for f, o, h in pairs}
    assert speed_error(pairs, truth, exact)["speed_mae"] == 0.0
    off = {k: v + 1.5 for k, v in exact.items()}
    off[(0, 11)] = float("nan")                                      # no estimate yet
    r = speed_error(pairs, truth, off)
    assert r["speed_mae"] == pytest.approx(1.5) and r["speed_pairs"] == 19
    assert r["speed_rel_error"] == pytest.approx(1.5 / np.mean(
        [truth[(f, o)] for f, o, h in pairs if (f, h) != (0, 11)]))


def _write_synth(folder, gt):
    folder.mkdir()
    lines = [f"{f + 1},{i},{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]},1,{c},1.0"
             for f, d in gt.items() for i, b, c in zip(d["ids"], d["xyxy"], d["class"])]
    (folder / "gt.txt").write_text("\n".join(lines) + "\n")
    with open(folder / "truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "time", "id", "class", "ground_x", "ground_y", "speed"])
        for f, d in gt.items():
            for i, c in zip(d["ids"], d["class"]):
                w.writerow([f, f / 10, i, c, 0, 0, 5.0 * i])
    (folder / "meta.json").write_text(json.dumps({"frame_base": {"gt.txt": 1,
                                                                 "truth.csv": 0}}))


def _write_run(folder, gt, speed_bias=0.0):
    folder.mkdir()
    with open(folder / "tracks.csv", "w", newline="") as th, \
            open(folder / "detections.csv", "w", newline="") as dh:
        tw, dw = csv.writer(th), csv.writer(dh)
        tw.writerow(["frame", "time", "id", "class", "x1", "y1", "x2", "y2", "ground_x",
                     "ground_y", "speed", "speed_std"])
        dw.writerow(["frame", "time", "class", "x1", "y1", "x2", "y2", "confidence"])
        for f, d in gt.items():
            for i, b, c in zip(d["ids"], d["xyxy"], d["class"]):
                sp = "" if f < 2 else 5.0 * i + speed_bias
                tw.writerow([f, f / 10, 100 + i, c, *b, 0, 0, sp, 0.1])
                dw.writerow([f, f / 10, c, *b, 0.9])
    (folder / "summary.json").write_text(json.dumps({"frames": N, "fps": 123.0}))


@pytest.mark.parametrize("bias", [0.0, 2.0])
def test_evaluate_tracking_on_files(tmp_path, bias):
    gt = _truth()
    _write_synth(tmp_path / "synth", gt)
    _write_run(tmp_path / "run", gt, bias)
    assert read_mot(tmp_path / "synth" / "gt.txt")[0]["xyxy"].tolist() == \
        gt[0]["xyxy"].tolist()
    r = evaluate_tracking(tmp_path / "run", tmp_path / "synth")
    assert r["map50"] == pytest.approx(1.0) and r["map"] == pytest.approx(1.0)
    assert r["mota"] == 1.0 and r["idf1"] == 1.0 and r["id_switches"] == 0
    assert r["speed_mae"] == pytest.approx(bias) and r["speed_coverage"] == pytest.approx(0.8)
    assert r["speed_rel_error"] == pytest.approx(bias / 7.5)        # true speeds 5 and 10
    assert r["fps"] == 123.0
    table = format_table(r)
    for name in ("mAP@0.5", "mAP@0.5:0.95", "MOTA", "IDF1", "speed MAE", "fps"):
        assert name in table


def test_evaluate_tracking_names_missing_file(tmp_path):
    _write_synth(tmp_path / "synth", _truth())
    with pytest.raises(FileNotFoundError, match="tracks.csv"):
        evaluate_tracking(tmp_path / "nowhere", tmp_path / "synth")
