"""npz reader: layouts, splits, class names, and an error naming the file and field for each
kind of bad content."""
import numpy as np
import pytest

from lowbit.data import DataError, describe, load, load_npz, load_with_classes, read_npz
from lowbit.data.npz import image_layout


def _data(n=5, shape=(3, 4, 6), seed=0, classes=3):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
            rng.integers(0, classes, n).astype(np.int32))


def test_gray_nchw_nhwc(tmp_path):
    x, y = _data(shape=(4, 6))
    np.savez(tmp_path / "gray.npz", x=x, y=y)
    images, labels, classes = read_npz(tmp_path / "gray.npz")
    assert images.shape == (5, 1, 4, 6) and labels.dtype == np.int64 and classes is None
    np.testing.assert_array_equal(images[:, 0], x)
    np.testing.assert_array_equal(labels, y)

    x, y = _data()  # (N, 3, 4, 6) channels-first
    np.savez_compressed(tmp_path / "nchw.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    images, _, classes = read_npz(tmp_path / "nchw.npz")
    np.testing.assert_array_equal(images, x)
    assert classes == ("a", "b", "c")

    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1), y=y,
             classes=np.array([b"a", b"b", b"c"]))
    images, _, classes = read_npz(tmp_path / "nhwc.npz")
    np.testing.assert_array_equal(images, x)
    assert images.flags.c_contiguous and classes == ("a", "b", "c")


def test_layout_rule():
    assert image_layout((2, 28, 28)) == "NHW"
    assert image_layout((2, 1, 28, 28)) == "NCHW"
    assert image_layout((2, 3, 32, 32)) == "NCHW"
    assert image_layout((2, 32, 32, 3)) == "NHWC"
    assert image_layout((2, 28, 28, 1)) == "NHWC"
    assert image_layout((2, 3, 5, 3)) == "NCHW"  # ambiguous: axis 1 wins
    with pytest.raises(DataError, match="expected 1 or 3 channels on axis 1"):
        image_layout((2, 4, 8, 8))
    with pytest.raises(DataError, match="expected shape \\(N, H, W\\)"):
        image_layout((2, 8))


def test_one_file_is_any_split_and_a_folder_has_splits(tmp_path):
    x, y = _data()
    np.savez(tmp_path / "one.npz", x=x, y=y)
    for split in ("train", "test"):
        got, labels = load(split, tmp_path / "one.npz")
        np.testing.assert_array_equal(got, x)
    d = tmp_path / "ds"
    d.mkdir()
    tx, ty = _data(n=2, seed=1)
    np.savez(d / "train.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    np.savez(d / "test.npz", x=tx, y=ty, classes=np.array(["a", "b", "c"]))
    images, labels, classes = load_with_classes("test", d)
    np.testing.assert_array_equal(images, tx)
    assert classes == ("a", "b", "c")
    info = describe(d)
    assert info.kind == "npz" and info.splits == ("train", "test")
    assert info.counts == {"train": 5, "test": 2} and info.shape == (3, 4, 6)
    assert info.classes == ("a", "b", "c")
    assert describe(tmp_path / "one.npz").splits == ("*",)


def test_test_only_folder(tmp_path):
    x, y = _data()
    np.savez(tmp_path / "test.npz", x=x, y=y)
    assert load("test", tmp_path)[0].shape == (5, 3, 4, 6)
    with pytest.raises(DataError, match="split 'train': no train.npz here \\(found test.npz\\)"):
        load("train", tmp_path)


def test_splits_must_agree(tmp_path):
    x, y = _data()
    np.savez(tmp_path / "train.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    np.savez(tmp_path / "test.npz", x=x[:, :, :, :5], y=y)
    with pytest.raises(DataError, match=r"train.npz: field 'x': images are \(C, H, W\) = "
                                        r"\(3, 4, 6\) but test.npz has \(3, 4, 5\)"):
        load_npz("train", tmp_path)
    np.savez(tmp_path / "test.npz", x=x, y=y, classes=np.array(["a", "b", "z"]))
    with pytest.raises(DataError, match="field 'classes': \\['a', 'b', 'c'\\] but test.npz has"):
        load_npz("train", tmp_path)


@pytest.mark.parametrize("fields, match", [
    (lambda x, y: dict(y=y), "field 'x': missing \\(the file has: y\\)"),
    (lambda x, y: dict(x=x), "field 'y': missing \\(the file has: x\\)"),
    (lambda x, y: dict(x=x.astype(np.float32), y=y), "field 'x': expected dtype uint8"),
    (lambda x, y: dict(x=x, y=y.astype(np.float64)), "field 'y': expected integer labels"),
    (lambda x, y: dict(x=x, y=y[:3]), "field 'y': expected shape \\(5,\\) .*got \\(3,\\)"),
    (lambda x, y: dict(x=x, y=y[:, None]), "field 'y': expected shape \\(5,\\)"),
    (lambda x, y: dict(x=x, y=y - 5), "field 'y': expected labels >= 0, got -"),
    (lambda x, y: dict(x=x[:, :2], y=y), "field 'x': expected 1 or 3 channels"),
    (lambda x, y: dict(x=x[:0], y=y[:0]), "field 'x': expected at least one image"),
    (lambda x, y: dict(x=x, y=y + 10, classes=np.array(["a"])),
     "field 'y': label 1[0-2] but 'classes' names only 1 classes"),
    (lambda x, y: dict(x=x, y=y, classes=np.array([1, 2, 3])),
     "field 'classes': expected a non-empty list of strings"),
    (lambda x, y: dict(x=x, y=y, classes=np.array(["a", None, "c"], dtype=object)),
     "field 'classes': expected plain numbers or strings, got an object array"),
])
def test_bad_fields_name_file_and_field(tmp_path, fields, match):
    x, y = _data()
    path = tmp_path / "bad.npz"
    np.savez(path, **fields(x, y))
    with pytest.raises(DataError, match=f"^{path}: {match}"):
        read_npz(path)


def test_unreadable_files(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(DataError, match=f"{junk}: not a readable .npz file"):
        load("train", junk)
    x, y = _data()
    good = tmp_path / "cut.npz"
    np.savez(good, x=x, y=y)
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match=f"{good}: "):
        load("train", good)
    np.save(tmp_path / "single.npy", x)
    with pytest.raises(DataError, match="single.npy: expected a .npz file or a data folder"):
        load("train", tmp_path / "single.npy")
    np.save(tmp_path / "arr.npy", x)
    (tmp_path / "arr.npy").rename(tmp_path / "arr.npz")
    with pytest.raises(DataError, match="arr.npz: expected a .npz archive .*got a single array"):
        read_npz(tmp_path / "arr.npz")
    with pytest.raises(DataError, match="missing.npz: file not found"):
        read_npz(tmp_path / "missing.npz")
