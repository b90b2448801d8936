"""Synthetic moving-object video: geometry (homography, boxes = drawn pixels), true speeds,
timestamps, determinism, the files written, and the command's errors."""
import csv
import json

import numpy as np
import pytest

pytest.importorskip("cv2")

from lowbit.data import DataError, fashion, load_yolo, open_video  # noqa: E402
from lowbit.data import synth  # noqa: E402
from lowbit.data.synth import (apply_homography, ground_homography, make_scene,  # noqa: E402
                               make_video, synth_command)
from lowbit.data.yolo import read_data_yaml  # noqa: E402

STATIC = {"noise": 0.0, "blur": 0.0, "lighting": 0.0}


def _truth(root):
    with open(root / "truth.csv") as f:
        return [dict(r) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "v"
    r = make_video(out, frames=60, seed=5, progress=False)
    assert r["frames"] == 60 and r["boxes"] > 0
    return out


def test_homography_round_trip_and_perspective():
    h, img, gnd = ground_homography((160, 120))
    np.testing.assert_allclose(apply_homography(h, img), gnd, atol=1e-9)
    pts = np.random.default_rng(0).uniform([-20, -30], [180, 150], (500, 2))
    back = apply_homography(np.linalg.inv(h), apply_homography(h, pts))
    np.testing.assert_allclose(back, pts, atol=1e-6)
    # an image row is a line of constant ground depth Y; the near row spans 8 m, the far 20 m
    row = apply_homography(h, [[0, 60], [37, 60], [160, 60]])
    np.testing.assert_allclose(row[:, 1], row[0, 1], atol=1e-9)
    scene = make_scene(frames=2, sprites="shapes")
    near, far = scene.scale(np.array([80, 120.0])), scene.scale(np.array([80, 0.0]))
    assert near == pytest.approx(160 / 8) and far == pytest.approx(160 / 20)


@pytest.mark.parametrize("sprites", ["shapes", "auto"])
def test_label_box_is_the_drawn_pixels(tmp_path, sprites):
    """One object, no noise / blur / lighting: each written label is the tight box of the
    pixels that differ from the empty background."""
    kw = dict(frames=40, seed=11, objects=1, sprites=sprites, **STATIC)
    make_video(tmp_path / "v", progress=False, **kw)
    scene = make_scene(**kw)
    ds = load_yolo(tmp_path / "v")
    checked = 0
    for i in range(40):
        empty, _ = scene.render(i, objects=False)
        diff = np.abs(ds.images[i].transpose(1, 2, 0).astype(int) - empty.astype(int)).max(2)
        if not len(ds.boxes[i]):
            continue
        r, c = np.flatnonzero(diff.any(1)), np.flatnonzero(diff.any(0))
        expect = [c[0], r[0], c[-1] + 1, r[-1] + 1]
        np.testing.assert_allclose(ds.boxes[i][0], expect, atol=1e-3)
        checked += 1
    assert checked >= 10


def test_occlusion_and_gt_match_labels(video):
    """gt.txt (MOT, 1-based frames) holds exactly the label boxes; some are occluded."""
    ds = load_yolo(video)
    rows = np.loadtxt(video / "gt.txt", delimiter=",")
    assert len(rows) == ds.num_boxes
    for i in range(60):
        mine = rows[rows[:, 0] == i + 1]
        xyxy = np.c_[mine[:, 2:4], mine[:, 2:4] + mine[:, 4:6]]
        np.testing.assert_allclose(np.sort(xyxy, 0), np.sort(ds.boxes[i], 0), atol=1e-3)
        np.testing.assert_array_equal(np.sort(mine[:, 7]), np.sort(ds.classes[i]))
    assert set(rows[:, 6]) == {1} and (rows[:, 8] >= 0.3).all() and (rows[:, 8] < 1).any()


def test_speeds_are_finite_differences(video):
    meta = json.loads((video / "meta.json").read_text())
    const = {s["id"] for s in meta["sprites"] if s["constant_velocity"]}
    assert const and len(const) < len(meta["sprites"])  # some accelerate
    rows = _truth(video)
    by_id = {}
    for r in rows:
        by_id.setdefault(int(r["id"]), []).append(r)
    checked = 0
    for oid, rs in by_id.items():
        for a, b in zip(rs, rs[1:]):
            if int(b["frame"]) != int(a["frame"]) + 1:
                continue
            dt = float(b["time"]) - float(a["time"])
            dist = np.hypot(float(b["ground_x"]) - float(a["ground_x"]),
                            float(b["ground_y"]) - float(a["ground_y"]))
            # exact: constant speed; linear speed -> distance = mean speed * dt
            expect = (float(a["speed"]) if oid in const
                      else (float(a["speed"]) + float(b["speed"])) / 2)
            assert dist / dt == pytest.approx(expect, abs=1e-5)
            checked += 1
    assert checked > 100
    speeds = np.array([float(r["speed"]) for r in rows])
    assert speeds.min() >= 0.5 and speeds.max() <= 8 + 1.5 * 2.5


def test_timestamps(video):
    ts = np.array(json.loads((video / "timestamps.json").read_text()))
    assert len(ts) == 60 and ts[0] == 0 and (np.diff(ts) > 0).all()
    np.testing.assert_array_less(np.abs(ts - np.arange(60) / 30.0), 0.1 / 30 + 1e-9)
    assert np.abs(ts - np.arange(60) / 30.0).max() > 0.01 / 30  # really jittered
    times = {int(r["frame"]): float(r["time"]) for r in _truth(video)}
    assert all(times[i] == pytest.approx(ts[i], abs=1e-9) for i in times)


def test_files(video):
    calib = json.loads((video / "calib.json").read_text())
    h = np.array(calib["homography"])
    assert calib["units"] == "m" and len(calib["image_points"]) >= 4
    np.testing.assert_allclose(apply_homography(h, calib["image_points"]),
                               calib["ground_points"], atol=1e-6)
    cfg = read_data_yaml(video / "data.yaml")
    assert cfg["train"] == cfg["val"] == "images/train" and cfg["nc"] == 4
    assert tuple(cfg["names"]) == synth.DEFAULT_CLASSES
    meta = json.loads((video / "meta.json").read_text())
    assert meta["seed"] == 5 and meta["size"] == [160, 120] and meta["fps"] == 30.0
    assert len(meta["sprites"]) >= 3 and meta["classes"] == list(synth.DEFAULT_CLASSES)
    with open_video(video / "video.mp4", timestamps="auto") as v:
        frames = list(v)
    assert len(frames) == 60 and frames[0][2].shape == (120, 160, 3)
    assert [t for _, t, _ in frames] == pytest.approx(json.loads(
        (video / "timestamps.json").read_text()))
    assert len(list((video / "images" / "train").iterdir())) == 60
    assert not [p for p in video.parent.iterdir() if p.name.startswith(".")]


def test_deterministic(tmp_path):
    kw = dict(frames=12, size=(96, 64), progress=False)
    a, b, c = (make_video(tmp_path / n, seed=s, **kw)["out"] for n, s in
               (("a", 3), ("b", 3), ("c", 4)))
    names = ["gt.txt", "truth.csv", "timestamps.json", "meta.json", "calib.json",
             "images/train/000007.png", "labels/train/000007.txt"]
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert (a / "truth.csv").read_bytes() != (c / "truth.csv").read_bytes()
    assert (a / "images/train/000007.png").read_bytes() != \
        (c / "images/train/000007.png").read_bytes()


def test_gray_val_split_and_shapes_fallback(tmp_path, monkeypatch):
    def absent(*a, **k):
        raise DataError("no Fashion-MNIST here")
    monkeypatch.setattr(fashion, "load", absent)
    make_video(tmp_path / "g", frames=10, channels=1, val_fraction=0.3, progress=False,
               size=(64, 48))
    train, val = load_yolo(tmp_path / "g"), load_yolo(tmp_path / "g", "val")
    assert train.images.shape == (7, 1, 48, 64) and val.images.shape == (3, 1, 48, 64)
    assert val.files[0].name == "000007.png"
    meta = json.loads((tmp_path / "g" / "meta.json").read_text())
    assert {s["source"] for s in meta["sprites"]} == {"shape"}


def test_out_dir_rules(tmp_path):
    out = tmp_path / "v"
    make_video(out, frames=3, size=(64, 48), progress=False)
    with pytest.raises(FileExistsError, match="not empty"):
        make_video(out, frames=3, size=(64, 48), progress=False)
    make_video(out, frames=4, size=(64, 48), progress=False, overwrite=True)
    assert len(json.loads((out / "timestamps.json").read_text())) == 4
    with pytest.raises(ValueError, match="frames"):
        make_video(tmp_path / "x", frames=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # no temp folders left


def test_command(tmp_path, capsys):
    assert synth_command(tmp_path / "v", frames=5, size="64x48", classes="Bag, Sneaker",
                         static=True, progress=False) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("wrote 5 frames")
    assert read_data_yaml(tmp_path / "v" / "data.yaml")["names"] == ["Bag", "Sneaker"]
    for kw in ({"size": "64"}, {"size": "16x16"}, {"fps": 0}, {"channels": 2}):
        assert synth_command(tmp_path / "w", frames=5, progress=False, **kw) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lowbit detect synth: error: ")
    assert synth_command(tmp_path / "v", frames=5, progress=False) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
