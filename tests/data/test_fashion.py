"""Fashion-MNIST finder and loader: search order, error messages, MNIST by path, real files."""
import subprocess
import sys

import numpy as np
import pytest

from lowbit.data import DataError, fashion, load, load_files, write_idx

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def make_dataset(d, n_train=30, n_test=12, gz=False, dotted=False, seed=0):
    """A fake MNIST-style folder (random pixels) written with the IDX writer."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    arrays = [rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_train, dtype=np.uint8),
              rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              rng.integers(0, 10, n_test, dtype=np.uint8)]
    for name, arr in zip(NAMES, arrays):
        if dotted:
            name = name.replace("-idx", ".idx")
        write_idx(d / (name + (".gz" if gz else "")), arr)
    return arrays


@pytest.mark.parametrize("gz, dotted", [(False, False), (True, False), (False, True)])
def test_load_from_folder(tmp_path, gz, dotted):
    arrays = make_dataset(tmp_path / "mnist", gz=gz, dotted=dotted)
    images, labels = load("train", tmp_path / "mnist")
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(images, arrays[0])
    np.testing.assert_array_equal(labels, arrays[1])
    t_images, t_labels = load("test", tmp_path / "mnist")
    np.testing.assert_array_equal(t_labels, arrays[3])
    assert t_images.shape == (12, 28, 28)


def test_load_files_by_path(tmp_path):
    arrays = make_dataset(tmp_path / "m")
    images, labels = load_files(tmp_path / "m" / NAMES[2], tmp_path / "m" / NAMES[3])
    np.testing.assert_array_equal(images, arrays[2])
    np.testing.assert_array_equal(labels, arrays[3])


def test_search_order(tmp_path, monkeypatch):
    make_dataset(tmp_path / "env", n_train=5)
    make_dataset(tmp_path / "default", n_train=7)
    monkeypatch.setattr(fashion, "DEFAULT_DIR", tmp_path / "default")
    monkeypatch.delenv("LOWBIT_DATA", raising=False)
    assert len(load("train")[1]) == 7
    monkeypatch.setenv("LOWBIT_DATA", str(tmp_path / "env"))
    assert len(load("train")[1]) == 5
    make_dataset(tmp_path / "explicit", n_train=9)
    assert len(load("train", tmp_path / "explicit")[1]) == 9


def test_not_found_lists_places_and_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion, "DEFAULT_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("LOWBIT_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load("train")
    msg = str(e.value)
    assert f"$LOWBIT_DATA {tmp_path / 'empty'} (missing train-images-idx3-ubyte" in msg
    assert f"default {tmp_path / 'nowhere'} (does not exist)" in msg
    for name in NAMES:
        assert name in msg


def test_explicit_folder_missing_one_file(tmp_path):
    make_dataset(tmp_path / "m")
    (tmp_path / "m" / NAMES[3]).unlink()
    with pytest.raises(DataError, match="explicit path .*missing t10k-labels-idx1-ubyte\\)"):
        load("train", tmp_path / "m")


def test_bad_contents(tmp_path):
    d = tmp_path / "m"
    make_dataset(d)
    write_idx(d / NAMES[1], np.zeros(29, np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: count: expected 30 labels"):
        load("train", d)
    write_idx(d / NAMES[1], np.full(30, 12, np.uint8))
    with pytest.raises(DataError, match="labels: expected values 0..9, got 12"):
        load("train", d)
    write_idx(d / NAMES[0], np.zeros((30, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: dims: expected \(\*, 28, 28\)"):
        load("train", d)
    with pytest.raises(ValueError, match="split: expected one of train, test, got 'val'"):
        load("val", d)


def test_real_fashion_mnist_test_split():
    """The installed Fashion-MNIST (make test runs scripts/ensure-data.sh first)."""
    images, labels = load("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    assert 70 < images.mean() < 75  # Fashion-MNIST's mean pixel is ~72.9 (MNIST's is ~33)


def test_data_package_does_not_import_torch(tmp_path):
    make_dataset(tmp_path / "m")
    code = ("import sys, lowbit.data as d; d.load('train', sys.argv[1]); "
            "d.Normalization(0.3, 0.3).apply(d.load('test', sys.argv[1])[0]); "
            "sys.exit('torch' in sys.modules)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")], check=True)
