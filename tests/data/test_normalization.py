"""Per-channel input normalisation: tables, apply, statistics, dict form, validation."""
import numpy as np
import pytest

from lowbit.data import Normalization


def _rgb(n=6, h=5, w=7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8)
    x[:, 1] //= 2  # give the channels different statistics
    return x


def test_one_channel_is_unchanged():
    """The scalar form, table and dict are what they were before per-channel support."""
    norm = Normalization(0.2860, 0.3530)
    assert norm.channels == 1 and isinstance(norm.mean, float)
    old_table = ((np.arange(256, dtype=np.float64) / 255.0 - 0.2860) / 0.3530).astype(np.float32)
    np.testing.assert_array_equal(norm.table(), old_table)
    assert norm.tables().shape == (1, 256)
    np.testing.assert_array_equal(norm.tables()[0], old_table)
    assert norm.to_dict() == {"mean": 0.2860, "std": 0.3530, "scale": 255.0}
    assert Normalization.from_dict({"mean": 0.2860, "std": 0.3530}) == norm
    assert Normalization([0.2860], [0.3530]) == norm  # a one-element list is the scalar form
    images = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    x = norm.apply(images)
    assert x.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(x, old_table[images[:, None]])
    np.testing.assert_array_equal(norm.apply(images[:, None]), x)


def test_from_images_one_channel_matches_the_old_arithmetic():
    images = np.random.default_rng(2).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    f = images.astype(np.float64) / 255.0
    for arr in (images, images[:, None]):
        norm = Normalization.from_images(arr)
        assert (norm.mean, norm.std) == (float(f.mean()), float(f.std()))


def test_per_channel_statistics_tables_and_apply():
    images = _rgb()
    norm = Normalization.from_images(images, channels=3)
    assert norm.channels == 3 and len(norm.mean) == 3 and len(norm.std) == 3
    f = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(norm.mean, f.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std, f.std(axis=(0, 2, 3)), rtol=1e-12)
    assert norm.mean[1] < norm.mean[0]
    tables = norm.tables()
    assert tables.shape == (3, 256) and tables.dtype == np.float32
    for c in range(3):
        want = ((np.arange(256.0) / 255.0 - norm.mean[c]) / norm.std[c]).astype(np.float32)
        np.testing.assert_array_equal(tables[c], want)
    x = norm.apply(images)
    assert x.shape == images.shape and x.dtype == np.float32
    for c in range(3):
        np.testing.assert_array_equal(x[:, c], tables[c][images[:, c]])
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-5)


def test_dict_round_trip_and_scalar_broadcast():
    norm = Normalization((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))
    d = norm.to_dict()
    assert d == {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3], "scale": 255.0}
    assert all(type(v) is float for v in d["mean"] + d["std"])
    back = Normalization.from_dict(d)
    assert back == norm and back.channels == 3
    assert Normalization([0.5, 0.5], 0.25) == Normalization((0.5, 0.5), (0.25, 0.25))
    assert hash(back) == hash(norm)


def test_errors():
    norm = Normalization((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="table\\(\\) is for one channel, this one has 3"):
        norm.table()
    with pytest.raises(ValueError, match="expected 3 channel\\(s\\).*got 1"):
        norm.apply(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="expected 1 channel\\(s\\).*got 3"):
        Normalization(0.5, 0.2).apply(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="expected dtype uint8"):
        norm.apply(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="expected shape \\(N, H, W\\) or \\(N, C, H, W\\)"):
        norm.apply(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="std: expected 3 values .*got 2"):
        Normalization((0.5, 0.5, 0.5), (0.2, 0.2))
    with pytest.raises(ValueError, match="std: expected 2 values .*got 1"):
        Normalization([0.5, 0.5], [0.2])  # a one-element list is not broadcast
    with pytest.raises(ValueError, match="std\\[1\\]: expected a positive number, got 0.0"):
        Normalization((0.5, 0.5), (0.2, 0.0))
    with pytest.raises(ValueError, match="mean\\[0\\]: expected a finite number, got nan"):
        Normalization((float("nan"), 0.5), 0.2)
    with pytest.raises(ValueError, match="mean: expected at least one value"):
        Normalization((), 0.2)
    with pytest.raises(ValueError, match="mean: expected a number or a flat list"):
        Normalization("0.5", 0.2)
    with pytest.raises(ValueError, match="scale: expected a positive number"):
        Normalization(0.5, 0.2, 0.0)
    with pytest.raises(ValueError, match="ckpt: std: expected 2 values"):
        Normalization.from_dict({"mean": [0.1, 0.2], "std": [1, 2, 3]}, "ckpt")
    with pytest.raises(ValueError, match="ckpt: mean: expected numbers"):
        Normalization.from_dict({"mean": ["a", 0.2], "std": [1, 2]}, "ckpt")
    with pytest.raises(ValueError, match="ckpt: expected a dict with 'mean' and 'std'"):
        Normalization.from_dict([0.1, 0.2], "ckpt")
    with pytest.raises(ValueError, match="expected 3 channel\\(s\\), got 1"):
        Normalization.from_images(np.zeros((2, 8, 8), np.uint8), channels=3)
    with pytest.raises(ValueError, match="at least one image"):
        Normalization.from_images(np.zeros((0, 3, 8, 8), np.uint8))
