"""Seeded splits, subsets, batch order and the input normalisation."""
import numpy as np
import pytest

from lowbit.data import Normalization, batch_order, iter_batches, subset, train_val_split


def _ids(n=1000):
    return np.arange(n).astype(np.int64), np.arange(n) % 10


def test_split_is_seeded_and_disjoint():
    ids, labels = _ids()
    (tr, ytr), (va, yva) = train_val_split(ids, labels, val_size=200, seed=3)
    assert len(tr) == 800 and len(va) == 200
    assert not set(tr) & set(va)
    assert sorted(np.concatenate([tr, va])) == list(range(1000))
    np.testing.assert_array_equal(ytr, tr % 10)  # labels travel with their images
    (tr2, _), (va2, _) = train_val_split(ids, labels, val_size=200, seed=3)
    np.testing.assert_array_equal(va, va2)
    (_, _), (va3, _) = train_val_split(ids, labels, val_size=200, seed=4)
    assert set(va) != set(va3)


def test_split_fraction_zero_and_errors():
    ids, labels = _ids(100)
    assert len(train_val_split(ids, labels, 0.25)[1][0]) == 25
    assert len(train_val_split(ids, labels, 0)[1][0]) == 0
    with pytest.raises(ValueError, match="val_size: expected 0 <= val_size < 100"):
        train_val_split(ids, labels, 100)
    with pytest.raises(ValueError, match="labels: expected 100"):
        train_val_split(ids, labels[:50])


def test_subset():
    ids, labels = _ids()
    a, _ = subset(ids, labels, 50, seed=1)
    b, _ = subset(ids, labels, 50, seed=1)
    np.testing.assert_array_equal(a, b)
    assert len(set(a)) == 50 and (np.diff(a) > 0).all()
    with pytest.raises(ValueError, match="size: expected 1..1000"):
        subset(ids, labels, 1001)


def test_batch_order_and_iteration():
    np.testing.assert_array_equal(batch_order(100, 0, 2), batch_order(100, 0, 2))
    assert not np.array_equal(batch_order(100, 0, 1), batch_order(100, 0, 2))
    ids, labels = _ids(103)
    seen = [b for b, _ in iter_batches(ids, labels, 10, seed=0)]
    assert [len(b) for b in seen] == [10] * 10 + [3]
    assert sorted(np.concatenate(seen)) == list(range(103))
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(ids, labels, 0))


def test_normalization():
    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    norm = Normalization.from_images(images)
    x = norm.apply(images)
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.float32
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-4
    expect = (images.astype(np.float64) / 255 - norm.mean) / norm.std
    np.testing.assert_allclose(x[:, 0], expect, rtol=1e-6, atol=1e-6)
    assert Normalization.from_dict(norm.to_dict()) == norm
    with pytest.raises(ValueError, match="expected dtype uint8"):
        norm.apply(images.astype(np.float32))
    with pytest.raises(ValueError, match="std: expected a positive number"):
        Normalization(0.5, 0.0)
    with pytest.raises(ValueError, match="ckpt: expected a dict with 'mean' and 'std'"):
        Normalization.from_dict({"mean": 1}, "ckpt")
