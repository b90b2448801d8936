"""Motion input (``detect synth --motion k``): the earlier frame written beside each image,
read back as the last channel, carried through training into the model file, and stacked from
the video by the pipeline exactly as the data set has it."""
from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from lowbit.data import DataError
from lowbit.data.synth import make_dataset, make_scene, scene_variation
from lowbit.data.yolo import load_yolo, motion_path
from lowbit.detect.detector import Detector
from lowbit.detect.pipeline import ModelFrames
from lowbit.train.detect_command import load_data
from lowbit.train.detect_fit import MODEL_FILE, export_detector, fit_detector

SIZE = (64, 48)


@pytest.fixture(scope="module")
def motion_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion") / "ds"
    make_dataset(root, videos=2, frames=12, seed=3, size=SIZE, every=5, val_videos=1,
                 motion=2, progress=False)
    return root


def test_the_set_holds_each_images_frame_k_earlier_in_gray(motion_set):
    assert "motion: 2" in (motion_set / "data.yaml").read_text()
    assert json.loads((motion_set / "meta.json").read_text())["motion"] == 2
    d = load_yolo(motion_set, "train")
    assert d.images.shape == (6, 4, 48, 64) and d.meta["motion"] == 2
    scene = make_scene(12, 4, SIZE, **scene_variation(4, 12, 30.0))
    for row, i in zip(range(3, 6), (0, 5, 10)):                   # seed 4: frames 0, 5, 10
        rgb = scene.render(i)[0]
        np.testing.assert_array_equal(d.images[row, :3], rgb.transpose(2, 0, 1))
        earlier = scene.render(max(i - 2, 0))[0]                  # frame 0 stands in at i < k
        np.testing.assert_array_equal(d.images[row, 3], cv2.cvtColor(earlier, cv2.COLOR_RGB2GRAY))
    assert not np.array_equal(d.images[4, 3], d.images[4, :3].mean(0).astype(np.uint8))
    assert load_yolo(motion_set, "val").images.shape == (3, 4, 48, 64)


def test_a_missing_or_mismatched_earlier_frame_and_a_bad_gap_are_named(motion_set, tmp_path):
    import shutil
    root = tmp_path / "ds"
    shutil.copytree(motion_set, root)
    (root / "data.yaml").write_text((root / "data.yaml").read_text().replace(
        str(motion_set), str(root)))
    first = sorted((root / "images" / "train").iterdir())[0]
    earlier = motion_path(first)
    assert earlier == root / "motion" / "train" / first.name
    cv2.imwrite(str(earlier), np.zeros((40, 64), np.uint8))
    with pytest.raises(DataError, match="motion"):
        load_yolo(root, "train")
    earlier.unlink()
    with pytest.raises(DataError, match=f"{earlier}: file not found"):
        load_yolo(root, "train")
    for bad in ("-1", "two", "1.5"):
        (root / "data.yaml").write_text(
            (motion_set / "data.yaml").read_text().replace("motion: 2", f"motion: {bad}"))
        with pytest.raises(DataError, match="'motion'"):
            load_yolo(root, "val")


def test_motion_needs_a_multi_video_set_and_a_count(tmp_path, capsys):
    from lowbit.cli import main
    assert main(["detect", "synth", "--out", str(tmp_path / "v"), "--frames", "5",
                 "--motion", "2"]) == 2
    assert "--motion: only with --videos" in capsys.readouterr().err
    with pytest.raises(ValueError, match="motion"):
        make_dataset(tmp_path / "x", videos=1, frames=5, motion=-1, progress=False)


def test_training_records_the_gap_and_the_model_file_carries_it(motion_set, tmp_path):
    train, val = load_data(motion_set)
    assert train.motion == val.motion == 2 and train.images.shape[1] == 4
    res = fit_detector(train, val, model="bnn", model_args={"width": 8}, epochs=1,
                       batch_size=4, out_dir=tmp_path / "run", progress=False)
    assert res.config["motion"] == 2 and res.config["input_shape"] == [4, 48, 64]
    path = tmp_path / MODEL_FILE
    export_detector(res.model, path, res.normalization, res.config["input_shape"],
                    res.config["classes"], motion=res.config["motion"])
    det = Detector(path)
    assert det.motion == 2 and det.input_shape == (4, 48, 64)
    # resuming on data of another gap, or mixing gaps, is refused by name
    other = type(train)(**{**vars(train), "motion": 3})
    with pytest.raises(ValueError, match="motion"):
        fit_detector(other, None, epochs=1, out_dir=tmp_path / "run", resume=True,
                     progress=False)
    with pytest.raises(ValueError, match="motion"):
        fit_detector(train, type(val)(**{**vars(val), "motion": 0}), epochs=1, progress=False)
    # the pipeline's frames give the detections of the data set's stacked images
    frames = [np.ascontiguousarray(im[:3].transpose(1, 2, 0)) for im in
              load_yolo(motion_set, "val").images]
    got = ModelFrames(det)(frames)
    x = np.stack([np.concatenate([f.transpose(2, 0, 1),
                                  cv2.cvtColor(frames[max(i - 2, 0)], cv2.COLOR_RGB2GRAY)[None]])
                  for i, f in enumerate(frames)])
    want = det(x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.xyxy, w.xyxy)
        np.testing.assert_array_equal(g.confidence, w.confidence)


class _Fake:
    input_shape, motion, classes = (4, 6, 8), 2, ["a"]


def test_model_frames_stack_the_gray_frame_k_earlier_across_batches():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(6)]
    mf = ModelFrames(_Fake())
    got = [mf._prepare(f) for f in frames]
    for i, x in enumerate(got):
        small = cv2.resize(frames[i], (8, 6), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(x[:3], small.transpose(2, 0, 1))
        before = cv2.resize(frames[max(i - 2, 0)], (8, 6), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(x[3], cv2.cvtColor(before, cv2.COLOR_RGB2GRAY))
