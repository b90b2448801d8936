"""The demo's video stage (lowbit.demo.detect_stage) on tiny settings: its files, results and
table."""
import json

import pytest

pytest.importorskip("cv2")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("pycocotools")
pytest.importorskip("motmetrics")


def test_detect_stage_writes_model_video_and_scores(tmp_path):
    from lowbit.demo import detect_stage, detect_table
    lines = []
    r = detect_stage(tmp_path / "det", quick=True, threads=1, repeats=1, log=lines.append,
                     settings={"frames": 20, "every": 5, "heldout_frames": 30})
    d = tmp_path / "det"
    for name in ("detector.lbm", "detect.json", "bench.json", "track/tracks.mp4",
                 "track/tracks.csv", "track-mog2/tracks.csv", "heldout/video.mp4",
                 "data/data.yaml", "train/checkpoint.pt"):
        assert (d / name).is_file(), name
    assert r["video"] == str(d / "track" / "tracks.mp4")
    assert r["binary"]["frames"] == r["mog2"]["frames"] == 30
    assert {"lowbit_ms", "speedup", "speedup_vs_ort_int8"} <= set(r["latency"])
    assert json.loads((d / "detect.json").read_text())["settings"]["heldout_seed"] == 1000
    recs = json.loads((d / "bench.json").read_text())["records"]
    low = [x for x in recs if x["system"] == "lowbit"]
    assert low and all(x["method"] == "bnn-detector" for x in recs)
    assert low[0]["quality_name"] == "held-out mAP@0.5"
    assert low[0]["quality"] == r["binary"]["map50"]
    table = detect_table(r)
    assert table[0].split()[-2:] == ["det.", "MOG2"] and "ORT int8" in table[-1]
    assert any("held-out video seed 1000" in line for line in lines)
    with pytest.raises(ValueError, match="held-out"):
        detect_stage(tmp_path / "bad", quick=True, settings={"heldout_seed": 1})
