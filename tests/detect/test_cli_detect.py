"""The video application's command line end to end on tiny data: ``detect synth`` (one video
and a multi-video training set) -> ``detect train`` (1 epoch, two folders) -> ``detect eval``
-> ``track`` with calibration -> ``detect autolabel``; plus the multi-seed data-set writer."""
import json

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("torch")
pytest.importorskip("pycocotools")
pytest.importorskip("motmetrics")

from lowbit.cli import main as cli  # noqa: E402


def test_cli_end_to_end(tmp_path, capsys):
    d = tmp_path
    assert cli(["detect", "synth", "--out", str(d / "ds"), "--videos", "2", "--val-videos", "1",
                "--frames", "40", "--every", "4", "--size", "64x48", "--seed", "10"]) == 0
    assert "20 training and 10 validation images" in capsys.readouterr().out
    assert cli(["detect", "synth", "--out", str(d / "vid"), "--frames", "40", "--seed", "3",
                "--size", "64x48"]) == 0
    # two folders joined; every new training option on
    assert cli(["detect", "train", "--data", str(d / "ds"), str(d / "vid"), "--out",
                str(d / "run"), "--epochs", "1", "--width", "8", "--batch-size", "16",
                "--stem-pool", "--blocks", "1,1", "--head", "quant", "--no-flip",
                "--shift", "0.1", "--scale", "0.2", "--photometric", "0.3",
                "--neighbours", "0.25", "--jpeg", "0.5", "--threads", "1"]) == 0
    capsys.readouterr()
    model = d / "run" / "detector.lbm"
    ck = json.loads((d / "run" / "history.json").read_text())
    assert len(ck) == 1
    import torch
    cfg = torch.load(d / "run" / "checkpoint.pt", weights_only=False)["config"]
    assert (cfg["flip"], cfg["shift"], cfg["scale"], cfg["photometric"]) == (False, 0.1, 0.2, 0.3)
    assert cfg["neighbours"] == 0.25 and cfg["jpeg"] == 0.5
    assert cfg["train_size"] == 20 + 34 and cfg["input_shape"] == [3, 48, 64]

    assert cli(["detect", "eval", "--model", str(model), "--data", str(d / "vid"),
                "--out", str(d / "eval"), "--track-thresh", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "mAP@0.5" in out and "MOTA" in out
    res = json.loads((d / "eval" / "eval.json").read_text())
    assert res["frames"] == 40 and 0.0 <= res["map50"] <= 1.0

    assert cli(["track", str(d / "vid" / "video.mp4"), "--model", str(model), "--calib",
                str(d / "vid" / "calib.json"), "--out", str(d / "track"), "--no-video",
                "--track-thresh", "0.2", "--unit", "m/s", "--tta"]) == 0
    summary = json.loads((d / "track" / "summary.json").read_text())
    assert summary["frames"] == 40 and summary["calibrated"] and summary["tta"]

    assert cli(["detect", "autolabel", str(d / "vid" / "video.mp4"), "--out",
                str(d / "auto"), "--warmup", "10"]) == 0
    assert (d / "auto" / "data.yaml").is_file()

    assert cli(["detect", "train", "--data", str(d / "ds"), "--out", str(d / "bad"),
                "--blocks", "1,2,3", "--stem-pool"]) == 2
    assert "blocks" in capsys.readouterr().err
    assert cli(["detect", "train", "--data", str(d / "ds"), "--out", str(d / "bad3"),
                "--neighbours", "-1"]) == 2
    assert "neighbours" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["detect", "train", "--data", str(d / "ds"), "--out", str(d / "bad4"),
             "--jpeg", "2"])
    assert "--jpeg" in capsys.readouterr().err
    assert cli(["detect", "synth", "--out", str(d / "bad2"), "--videos", "2",
                "--val-videos", "-1"]) == 2


def test_make_dataset_splits_seeds_and_matches_make_video(tmp_path):
    from lowbit.data.synth import make_dataset, make_video, scene_variation
    from lowbit.data.yolo import load_yolo
    r = make_dataset(tmp_path / "ds", videos=2, frames=20, seed=5, size=(64, 48), every=5,
                     val_videos=1, progress=False)
    assert (r["train_images"], r["val_images"], r["videos"]) == (8, 4, 3)
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert [(v["seed"], v["split"]) for v in meta["videos"]] == \
        [(5, "train"), (6, "train"), (7, "val")]
    assert meta["videos"][0]["noise"] == scene_variation(5, 20, 30.0)["noise"]
    train, val = load_yolo(tmp_path / "ds", "train"), load_yolo(tmp_path / "ds", "val")
    assert len(train.images) == 8 and len(val.images) == 4
    assert [p.name for p in val.files] == [f"s7_{i:06d}.png" for i in (0, 5, 10, 15)]
    # a frame of the set is the frame of that seed's video with the same conditions
    make_video(tmp_path / "v", 20, 6, (64, 48), val_fraction=0.0, progress=False,
               **scene_variation(6, 20, 30.0))
    one = load_yolo(tmp_path / "v", "train")
    np.testing.assert_array_equal(train.images[4 + 2], one.images[10])
    np.testing.assert_allclose(train.boxes[4 + 2], one.boxes[10])
    with pytest.raises(FileExistsError):
        make_dataset(tmp_path / "ds", videos=1, frames=5, progress=False)
    with pytest.raises(ValueError, match="every"):
        make_dataset(tmp_path / "x", videos=1, frames=5, every=0, progress=False)


def test_load_data_joins_folders(tmp_path):
    from lowbit.data.synth import make_dataset
    from lowbit.train.detect_command import load_data
    make_dataset(tmp_path / "a", videos=1, frames=10, seed=0, size=(64, 48), every=5,
                 val_videos=1, progress=False)
    make_dataset(tmp_path / "b", videos=1, frames=15, seed=9, size=(64, 48), every=5,
                 val_videos=1, progress=False)
    tr, va = load_data([tmp_path / "a", tmp_path / "b"])
    assert len(tr.images) == 2 + 3 and len(va.images) == 2 + 3
    assert len(tr.boxes) == len(tr.classes) == 5 and tr.names == list(va.names)
    tr2, _ = load_data(f"{tmp_path / 'a'},{tmp_path / 'b'}")
    np.testing.assert_array_equal(tr.images, tr2.images)
    make_dataset(tmp_path / "c", videos=1, frames=5, seed=0, size=(80, 48), val_videos=0,
                 progress=False)
    with pytest.raises(ValueError, match="differ"):
        load_data([tmp_path / "a", tmp_path / "c"])
