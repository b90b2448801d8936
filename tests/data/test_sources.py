"""load() dispatch: which reader a root gets, test-only IDX folders, describe(), errors."""
import numpy as np
import pytest

from lowbit.data import DataError, data_kind, describe, load, load_with_classes, write_idx
from lowbit.data.fashion import CLASSES

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def make_dataset(d, gz=False):
    """A fake MNIST-style folder: 30 train and 12 test images of random pixels."""
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    arrays = [rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, 30, dtype=np.uint8),
              rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, 12, dtype=np.uint8)]
    for name, arr in zip(NAMES, arrays):
        write_idx(d / (name + (".gz" if gz else "")), arr)
    return arrays


def test_test_only_idx_folder(tmp_path):
    d = tmp_path / "t10k"
    arrays = make_dataset(d)
    for name in NAMES[:2]:
        (d / name).unlink()
    images, labels = load("test", d)
    assert images.shape == (12, 28, 28)  # IDX keeps its (N, 28, 28) shape
    np.testing.assert_array_equal(images, arrays[2])
    np.testing.assert_array_equal(labels, arrays[3])
    with pytest.raises(DataError, match=r"split 'train': this IDX folder has only the test files "
                                        r"\(t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte\); "
                                        r"needed train-images-idx3-ubyte and train-labels"):
        load("train", d)
    info = describe(d)
    assert info.kind == "idx" and info.splits == ("test",) and info.counts == {"test": 12}
    assert info.shape == (1, 28, 28) and info.classes is None


def test_train_only_gz_idx_folder(tmp_path):
    d = tmp_path / "m"
    make_dataset(d, gz=True)
    for name in NAMES[2:]:
        (d / (name + ".gz")).unlink()
    assert load("train", d)[0].shape == (30, 28, 28)
    assert describe(d).counts == {"train": 30}
    with pytest.raises(DataError, match="only the train files"):
        load("test", d)


def test_half_split_is_an_error(tmp_path):
    d = tmp_path / "m"
    make_dataset(d)
    (d / NAMES[2]).unlink()  # t10k images gone, t10k labels still there
    with pytest.raises(DataError, match="explicit path .*missing t10k-images-idx3-ubyte\\)"):
        load("train", d)


def test_dispatch_and_errors(tmp_path):
    make_dataset(tmp_path / "idx")
    assert data_kind(tmp_path / "idx") == "idx" and data_kind(None) == "idx"
    x, y, classes = load_with_classes("train", tmp_path / "idx")
    assert x.shape == (30, 28, 28) and classes is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load("train", tmp_path / "empty")
    msg = str(e.value)
    assert "Fashion-MNIST files not found" in msg and "train.npz and/or test.npz" in msg
    assert "one subfolder per class" in msg
    with pytest.raises(DataError, match="does not exist"):
        load("train", tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="notes.txt: expected a .npz file or a data folder"):
        load("train", tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="size: resizing is only for image folders"):
        load("train", tmp_path / "idx", size=(8, 8))
    with pytest.raises(ValueError, match="split: expected one of train, test, got 'val'"):
        load("val", tmp_path / "idx")
    # IDX files win over stray class-like subfolders; train.npz wins over IDX files
    (tmp_path / "idx" / "junk").mkdir()
    assert data_kind(tmp_path / "idx") == "idx"
    np.savez(tmp_path / "idx" / "train.npz", x=np.zeros((2, 3, 4, 4), np.uint8), y=np.zeros(2, int))
    assert data_kind(tmp_path / "idx") == "npz"


def test_idx_sizes_stay_strict(tmp_path):
    d = tmp_path / "m"
    make_dataset(d)
    write_idx(d / NAMES[2], np.zeros((12, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: dims: expected \(\*, 28, 28\)"):
        load("test", d)


def test_describe_installed_fashion_mnist():
    info = describe()
    assert info.kind == "idx" and info.splits == ("train", "test")
    assert info.counts == {"train": 60000, "test": 10000} and info.classes == CLASSES
    assert load_with_classes("test")[2] == CLASSES
