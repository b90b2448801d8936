"""Background-subtraction labels: the detector on hand-made frames, autolabel recovering the
boxes of moving sprites of a synthetic video, and the command's errors."""
import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from lowbit.data import load_yolo, make_video  # noqa: E402
from lowbit.data.yolo import read_data_yaml  # noqa: E402
from lowbit.detect import Detections  # noqa: E402
from lowbit.detect.autolabel import (BackgroundSubtractorDetector, autolabel,  # noqa: E402
                                     autolabel_command)


def _iou(a, b):
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(2)
    area = lambda z: (z[:, 2:] - z[:, :2]).prod(1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


@pytest.mark.parametrize("method", ["mog2", "knn"])
def test_detector_finds_a_moving_square(method):
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 120, (60, 80, 3), dtype=np.uint8)
    det = BackgroundSubtractorDetector(method, min_area=10)
    det.prime(bg)
    for k in range(12):
        f = bg.copy()
        f[20:34, 5 + 4 * k:21 + 4 * k] = (230, 40, 40)
        d = det(f)
    assert isinstance(d, Detections) and len(d) == 1
    np.testing.assert_allclose(d.xyxy[0], [49, 20, 65, 34])
    assert d.confidence[0] > 0.95 and d.class_id[0] == 0
    assert det.mask.shape == (60, 80) and set(np.unique(det.mask)) == {0, 255}
    assert len(det(bg)) == 0  # the background alone: nothing
    with pytest.raises(ValueError, match="method"):
        BackgroundSubtractorDetector("median")
    with pytest.raises(ValueError, match="frame"):
        det(np.zeros((4, 4, 2), np.uint8))


def test_gain_compensation():
    """A global brightness change is not foreground."""
    bg = np.random.default_rng(1).integers(60, 140, (40, 40), dtype=np.uint8)
    det = BackgroundSubtractorDetector(min_area=4)
    det.prime(bg)
    assert len(det(np.clip(bg * 1.2, 0, 255).astype(np.uint8))) == 0
    assert len(BackgroundSubtractorDetector(gain=False, min_area=4)(bg)) == 0


def _moving_ids(gt_txt):
    """Ids of objects whose box centre travels more than twice the box's larger side over the
    clip.  A far object walking along the road barely moves in the image: it covers the same
    pixels in most frames, so it is part of the median background and background subtraction
    cannot see it (or sees a ghost where it stays)."""
    rows = np.loadtxt(gt_txt, delimiter=",")
    out = set()
    for oid in np.unique(rows[:, 1]):
        r = rows[rows[:, 1] == oid]
        centre = r[:, 2:4] + r[:, 4:6] / 2
        if np.hypot(*(centre.max(0) - centre.min(0))) > 2 * r[:, 4:6].max():
            out.add(int(oid))
    return out


def test_autolabel_recovers_sprite_boxes(tmp_path):
    """Static lighting, no noise or blur: most boxes of moving objects that do not touch
    another (blobs of touching objects merge) are found with IoU > 0.7.  320x240, because the
    video's 4:2:0 chroma bleeds colour about a pixel past an object's edge, which costs a
    narrow box (8 px wide at 160x120) its IoU."""
    synth = make_video(tmp_path / "s", frames=150, seed=1, size=(320, 240), objects=4,
                       noise=0.0, blur=0.0, lighting=0.0, progress=False)["out"]
    r = autolabel(synth / "video.mp4", tmp_path / "a", warmup=10, progress=False)
    assert r["frames"] == 140 and r["boxes"] > 0
    found = load_yolo(tmp_path / "a")
    assert found.names == ("object",) and found.files[0].name == "000010.png"
    rows = np.loadtxt(synth / "gt.txt", delimiter=",")  # = the label boxes, with ids
    moving = _moving_ids(synth / "gt.txt")
    hits = isolated = 0
    for f, boxes in zip(found.files, found.boxes):
        here = rows[rows[:, 0] == int(f.stem) + 1]
        if not len(here):
            continue
        g = np.c_[here[:, 2:4], here[:, 2:4] + here[:, 4:6]].astype(np.float32)
        grown = g + np.array([-3, -3, 3, 3], np.float32)
        alone = ((_iou(grown, grown) > 0).sum(1) == 1) & np.isin(here[:, 1], list(moving))
        best = _iou(g, boxes).max(1) if len(boxes) else np.zeros(len(g))
        hits += int((best[alone] > 0.7).sum())
        isolated += int(alone.sum())
    assert isolated > 200 and hits / isolated > 0.85, (hits, isolated)
    frames = json.loads((tmp_path / "a" / "frames.json").read_text())
    ts = json.loads((synth / "timestamps.json").read_text())
    assert frames[0][0] == 10 and len(frames) == 140
    r2 = autolabel(synth / "video.mp4", tmp_path / "b", warmup=0, background="warmup",
                   max_frames=20, timestamps=synth / "timestamps.json", progress=False)
    frames = json.loads((tmp_path / "b" / "frames.json").read_text())
    assert r2["frames"] == 20 and frames[3][1] == pytest.approx(ts[3], abs=1e-6)


def test_command(tmp_path, capsys):
    synth = make_video(tmp_path / "s", frames=20, size=(64, 48), progress=False)["out"]
    assert autolabel_command(synth / "video.mp4", tmp_path / "a", warmup=5, method="knn",
                             name="thing", progress=False) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("labelled 15 frames")
    assert read_data_yaml(tmp_path / "a" / "data.yaml")["names"] == ["thing"]
    for args, why in (((synth / "nope.mp4", tmp_path / "b"), "file not found"),
                      ((synth / "video.mp4", tmp_path / "a"), "not empty"),
                      ((synth / "video.mp4", tmp_path / "c", "x"), "method")):
        kw = {"method": args[2]} if len(args) > 2 else {}
        assert autolabel_command(*args[:2], progress=False, **kw) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lowbit detect autolabel: error: ")
        assert why in err[0]
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_autolabel_with_motion_writes_each_frames_earlier_frame(tmp_path):
    from lowbit.data.video import open_video
    synth = make_video(tmp_path / "s", frames=12, size=(64, 48), progress=False)["out"]
    autolabel(synth / "video.mp4", tmp_path / "a", warmup=4, motion=3, progress=False)
    assert read_data_yaml(tmp_path / "a" / "data.yaml")["motion"] == 3
    d = load_yolo(tmp_path / "a")
    assert d.images.shape == (8, 4, 48, 64) and d.meta["motion"] == 3
    with open_video(synth / "video.mp4") as src:
        video = [f for _, _, f in src]
    for row, f in enumerate(d.files):                  # frames 4..11: earlier = i - 3
        i = int(f.stem)
        np.testing.assert_array_equal(d.images[row, :3], video[i].transpose(2, 0, 1))
        gray = cv2.cvtColor(video[i - 3], cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(d.images[row, 3], gray)
    autolabel(synth / "video.mp4", tmp_path / "b", warmup=0, background="warmup", motion=2,
              max_frames=3, progress=False)
    first = load_yolo(tmp_path / "b").images
    np.testing.assert_array_equal(first[1, 3], first[0, 3])   # frames 0, 1: frame 0 stands in
    np.testing.assert_array_equal(first[2, 3], cv2.cvtColor(video[0], cv2.COLOR_RGB2GRAY))
    with pytest.raises(ValueError, match="motion"):
        autolabel(synth / "video.mp4", tmp_path / "c", motion=-2, progress=False)
