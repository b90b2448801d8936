"""track_video end to end on a small synthetic video: CSV / JSON / video outputs, speeds
from real timestamps, a batched detector, and track_command's one-line errors."""
import csv
import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from lowbit.detect.calibration import Calibration
from lowbit.detect.detections import Detections
from lowbit.detect.pipeline import (DET_COLUMNS, TRACK_COLUMNS, ModelFrames, track_command,
                                    track_video)

W, H, N = 160, 96, 40
SPEEDS = {1: 60.0, 2: -45.0}                  # px/s along x; 0.1 m per pixel -> 6, 4.5 m/s


def _times(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.uniform(0.8, 1.2, n) / 25.0)


def _scene(n=N):
    """(index, t, frame) with a red box moving right and a green one moving left."""
    for i, t in enumerate(_times(n)):
        f = np.full((H, W, 3), 40, np.uint8)
        x1 = int(round(10 + SPEEDS[1] * t))
        x2 = int(round(130 + SPEEDS[2] * t))
        f[20:40, x1:x1 + 16] = (255, 0, 0)
        f[60:84, x2:x2 + 12] = (0, 255, 0)
        yield i, float(t), f


def colour_detector(frame):
    """A stand-in detector: bright blobs, class 0 for red, 1 for green."""
    out = []
    for c in (0, 1):
        mask = (frame[:, :, c] > 200).astype(np.uint8)
        n, _, st, _ = cv2.connectedComponentsWithStats(mask)
        out += [([x, y, x + w, y + h], c) for x, y, w, h, _ in st[1:n]]
    if not out:
        return Detections.empty()
    return Detections([b for b, _ in out], np.full(len(out), 0.9), [c for _, c in out])


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_track_video_outputs_and_speeds(tmp_path):
    pytest.importorskip("lowbit.data.video")                     # the video writer
    cal = Calibration.from_scale(0.1)
    summary = track_video(list(_scene()), colour_detector, tmp_path, cal, fps=25,
                          class_names=["red", "green"], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["detections.csv", "summary.json", "tracks.csv", "tracks.mp4"]
    rows = _rows(tmp_path / "tracks.csv")
    assert list(rows[0]) == TRACK_COLUMNS
    assert list(_rows(tmp_path / "detections.csv")[0]) == DET_COLUMNS
    ids = {r["id"] for r in rows}
    assert len(ids) == 2 and {r["class"] for r in rows} == {"0", "1"}
    by_class = {r["class"]: r["id"] for r in rows}
    assert all(by_class[r["class"]] == r["id"] for r in rows)     # one id per object
    last = {r["class"]: r for r in rows if r["speed"]}     # the latest estimate per object
    assert float(last["0"]["speed"]) == pytest.approx(6.0, rel=0.05)
    assert float(last["1"]["speed"]) == pytest.approx(4.5, rel=0.05)
    assert float(last["0"]["speed_std"]) < 0.3
    assert rows[0]["speed"] == ""                                # not before enough history
    assert float(rows[0]["ground_x"]) == pytest.approx(0.1 * (float(rows[0]["x1"]) +
                                                             float(rows[0]["x2"])) / 2, abs=1e-3)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["frames"] == N and on_disk["fps"] > 0
    assert {"read", "detect", "track", "speed", "annotate", "write"} <= set(on_disk["timings_s"])
    tr = {t["class_name"]: t for t in summary["tracks"]}
    assert tr["red"]["mean_speed"] == pytest.approx(6.0, rel=0.1)
    assert tr["red"]["max_speed"] >= tr["red"]["mean_speed"]
    assert tr["red"]["length_m"] == pytest.approx(0.1 * 60 * (tr["red"]["duration_s"]), rel=0.1)
    cap = cv2.VideoCapture(str(tmp_path / "tracks.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N
    ok, img = cap.read()
    assert ok and img.shape == (H, W, 3)


def test_video_file_with_timestamps_json_and_no_calibration(tmp_path):
    """Through lowbit.data.video.open_video: the real times come from timestamps.json."""
    pytest.importorskip("lowbit.data.video")
    from lowbit.data.video import VideoWriter
    vid = tmp_path / "in" / "video.mp4"
    vid.parent.mkdir()
    with VideoWriter(vid, 25.0, (W, H)) as w:
        for _, _, f in _scene():
            w.write(f)
    (vid.parent / "timestamps.json").write_text(json.dumps(_times().tolist()))
    out = tmp_path / "out"
    summary = track_video(vid, colour_detector, out, None, video=False, limit=30,
                          progress=False)
    rows = _rows(out / "tracks.csv")
    assert summary["frames"] == 30 and not (out / "tracks.mp4").exists()
    assert float(rows[-1]["time"]) == pytest.approx(_times()[29], abs=1e-5)
    assert all(r["speed"] == "" and r["ground_x"] == "" for r in rows)
    assert len({r["id"] for r in rows}) == 2


class _Batched:
    """A stand-in for ModelFrames: takes a list of frames."""
    batched = True
    classes = ["red", "green"]

    def __init__(self):
        self.calls = []
        self.timings = {"runtime": 0.0}

    def __call__(self, frames):
        self.calls.append(len(frames))
        return [colour_detector(f) for f in frames]


def test_batched_detector_and_its_timings(tmp_path):
    det = _Batched()
    summary = track_video(list(_scene(10)), det, tmp_path, batch=4, video=False,
                          progress=False)
    assert det.calls == [4, 4, 2] and summary["frames"] == 10
    assert "detector_runtime" in summary["timings_s"]


def test_model_frames_resizes_and_scales_boxes_back(monkeypatch):
    import lowbit.detect.decode as dec

    class FakeDetector:
        input_shape, stride, threshold, topk, classes = (1, 48, 80), 4, 0.3, 10, ["a"]

        def maps(self, x):
            assert x.shape == (2, 1, 48, 80) and x.dtype == np.uint8
            return "maps"

    monkeypatch.setattr(dec, "decode", lambda *a, **k: [
        Detections([[10, 10, 20, 30]], [0.9], [0]) for _ in range(2)])
    out = ModelFrames(FakeDetector())([np.zeros((H, W, 3), np.uint8)] * 2)
    assert out[0].xyxy.tolist() == [[20, 20, 40, 60]]


def test_track_command_errors(tmp_path, capsys):
    vid = tmp_path / "missing.mp4"
    assert track_command(vid, None, tmp_path / "o", detector="model") == 2
    assert "lowbit track: error: a detector model file is needed" in capsys.readouterr().err
    assert track_command(vid, tmp_path / "nope.lbm", tmp_path / "o") == 2
    assert "nope.lbm: file not found" in capsys.readouterr().err
    bad = tmp_path / "calib.json"
    bad.write_text('{"image_points": [[0, 0]], "ground_points": [[0, 0]]}')
    assert track_command(vid, None, tmp_path / "o", calib=bad, detector="mog2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calib.json: image_points" in err
    assert track_command(vid, None, tmp_path / "o", threads=0) == 2
    assert "--threads" in capsys.readouterr().err
    assert track_command(vid, None, tmp_path / "o", detector="yolo") == 2
    assert "--detector" in capsys.readouterr().err


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    synth = pytest.importorskip("lowbit.data.synth")
    out = tmp_path_factory.mktemp("synth") / "s0"
    synth.make_video(out, frames=150, seed=0, sprites="shapes", progress=False)
    return out


def test_oracle_boxes_on_synthetic_video_track_and_measure_well(synth_dir, tmp_path):
    """Ground-truth boxes as the detector: what is left is the tracker's and the speed
    estimator's own error, scored by the metrics module against truth.csv."""
    from lowbit.detect.metrics import evaluate_tracking, read_mot
    gt = read_mot(synth_dir / "gt.txt")

    def oracle(frame, _i=iter(range(10 ** 6))):
        g = gt.get(next(_i))
        return Detections.empty() if g is None else \
            Detections(g["xyxy"], np.full(len(g["ids"]), 0.9), g["class"])

    cal = Calibration.from_file(synth_dir / "calib.json")
    track_video(synth_dir / "video.mp4", oracle, tmp_path, cal, video=False, progress=False)
    r = evaluate_tracking(tmp_path, synth_dir)
    assert r["map50"] == pytest.approx(1.0) and r["frames"] == 150
    assert r["mota"] > 0.95 and r["idf1"] > 0.95 and r["id_switches"] <= 1
    assert r["speed_rel_error"] < 0.10 and r["speed_coverage"] > 0.7


def test_track_and_eval_commands_with_mog2(synth_dir, tmp_path, capsys):
    pytest.importorskip("lowbit.detect.autolabel")
    from lowbit.detect.metrics import eval_command
    assert eval_command(None, synth_dir, detector="mog2", out=tmp_path / "ev",
                        progress=False) == 0
    table = capsys.readouterr().out
    for row in ("mAP@0.5 ", "mAP@0.5:0.95", "MOTA", "IDF1", "ID switches", "speed MAE",
                "speed error (relative)", "fps"):
        assert row in table
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["frames"] == 150
    assert track_command(synth_dir / "video.mp4", None, tmp_path / "tr",
                         calib=synth_dir / "calib.json", detector="mog2", unit="m/s",
                         progress=False) == 0
    out = capsys.readouterr().out
    assert "150 frames" in out and "mean m/s" in out
    assert (tmp_path / "tr" / "tracks.mp4").is_file()
    assert eval_command(None, tmp_path, detector="mog2") == 2
    assert "video.mp4: file not found" in capsys.readouterr().err
    assert json.loads((tmp_path / "tr" / "summary.json").read_text())["tta"] is False
    for run in (lambda: eval_command(None, synth_dir, detector="mog2", tta=True),
                lambda: track_command(synth_dir / "video.mp4", None, tmp_path / "t2",
                                      detector="mog2", tta=True)):
        assert run() == 2
        assert "--tta: only a model detector" in capsys.readouterr().err


def test_annotator_draws_boxes_labels_and_trails():
    from lowbit.detect.annotate import Annotator, speed_label, track_color
    assert speed_label(15.0, 0.1) == "54 km/h +-0.4" and speed_label(2.0, 0.5, "m/s") == \
        "2.0 m/s +-0.5" and speed_label(None, None) == ""
    ann = Annotator(class_names=["car"])
    assert ann.label(3, 0, 15.0, 0.1) == "#3 car 54 km/h +-0.4" and ann.label(4, 7) == "#4 7"
    frame = np.zeros((H, W, 3), np.uint8)
    for k in range(3):
        tracks = Detections([[40 + 5 * k, 30, 70 + 5 * k, 80]], [0.9], [0], tracker_id=[3])
        img = ann(frame, tracks, {3: (15.0, 0.1)})
    assert frame.max() == 0                                   # the input is left alone
    assert (img[79, 60:70] == track_color(3)).all(axis=1).any()   # the box's bottom edge
    assert img[:29].any()                                     # the label above the box
    ann(frame, Detections.empty(), {})
    assert list(ann._trails[3]) and len(ann._trails[3]) == 2   # unseen trails fade out


def test_speed_positions_only_from_boxes_whose_foot_is_visible():
    """A box cut by a frame edge, or whose foot (the middle of its bottom edge) lies behind a
    nearer box (one reaching lower in the image and covering that point), gives speed no
    position; others do, also when a nearer box covers only a side of their bottom edge."""
    from lowbit.detect.pipeline import _inside
    xyxy = np.array([[10, 10, 30, 40],      # 0: foot (x 20) hidden by 1
                     [20, 35, 40, 60],      # 1: the nearer box, free
                     [50, 10, 70, 40],      # 2: foot (x 60) hidden by 5
                     [0, 10, 20, 30],       # 3: cut by the left edge
                     [80, 60, 99, 79],      # 4: cut by the bottom edge (h = 80)
                     [52, 30, 68, 45],      # 5: in front of 2, free
                     [40, 50, 60, 70],      # 6: free: 7 covers only its right side
                     [55, 60, 75, 75]],     # 7: the nearer box, free
                    np.float32)
    ok = _inside(xyxy, 100, 80, 1.0)
    assert ok.tolist() == [False, True, False, False, False, True, True, True]
    assert _inside(xyxy[:1], 100, 80, 1.0).tolist() == [True]          # alone: visible
    assert _inside(np.zeros((0, 4), np.float32), 100, 80, 1.0).shape == (0,)


def test_a_recovered_track_restarts_its_speed_history(tmp_path):
    """When the tracker reports a track found again by distance (``data["recovered"]``), the
    pipeline drops that track's speed history before adding the new position."""
    from lowbit.detect.speed import SpeedEstimator

    class Recorder(SpeedEstimator):
        def __init__(self):
            super().__init__()
            self.forgotten = []

        def forget(self, track_id):
            self.forgotten.append(track_id)
            super().forget(track_id)

    class Flagging:                        # a stand-in tracker: every box is track 7
        def __init__(self, flag_at):
            self.n, self.flag_at = 0, flag_at

        def update(self, dets, t):
            out = Detections(dets.xyxy, dets.confidence, dets.class_id,
                             np.full(len(dets), 7, np.int64))
            out.data["recovered"] = np.full(len(dets), self.n == self.flag_at)
            self.n += 1
            return out

    speed = Recorder()
    cal = Calibration.from_scale(0.1)
    track_video(list(_scene(20)), lambda f: colour_detector(f)[:1], tmp_path, cal, fps=25,
                tracker=Flagging(12), speed=speed, video=False, progress=False)
    assert speed.forgotten == [7]
    rows = list(csv.DictReader(open(tmp_path / "tracks.csv")))
    assert rows[11]["speed"] != "" and rows[12]["speed"] == ""        # history restarted


def test_boxes_carry_their_colour_unless_colour_is_off(tmp_path, capsys):
    seen = []

    def recording(frame):
        d = colour_detector(frame)
        seen.append(d)
        return d
    track_video(_scene(), recording, tmp_path / "a", video=False, progress=False)
    red = [d.data["colour"][d.class_id == 0] for d in seen if (d.class_id == 0).any()]
    assert len(red) == N and all(c.shape == (1, 3) and c[0, 0] > 200 > c[0, 2] for c in red)
    seen.clear()
    track_video(_scene(), recording, tmp_path / "b", video=False, progress=False, colour=False)
    assert len(seen) == N and not any("colour" in d.data for d in seen)
    from lowbit.cli import main
    vid = tmp_path / "v.mp4"
    from lowbit.data.video import VideoWriter
    with VideoWriter(vid, 25.0, (W, H)) as w:
        for _, _, f in _scene(12):
            w.write(f)
    assert main(["track", str(vid), "--detector", "mog2", "--no-colour", "--no-video",
                 "--out", str(tmp_path / "c")]) == 0
