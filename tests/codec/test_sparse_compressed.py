"""Relative sparse index, Deep-Compression tensor codec and model files."""
import numpy as np
import pytest

from lowbit import codec
from lowbit.codec import FormatError, compressed, container, sparse


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_sparse_round_trip_random_patterns(bits):
    rng = np.random.default_rng(bits)
    f = sparse.filler(bits)
    for density in (0.0, 0.001, 0.05, 0.5, 1.0):
        size = int(rng.integers(1, 3000))
        mask = rng.random(size) < density
        pos = np.flatnonzero(mask)
        gaps = sparse.encode(pos, bits)
        assert gaps.size == sparse.entries(pos, bits)
        assert gaps.max(initial=0) <= f
        assert np.array_equal(sparse.decode(gaps, bits, size), pos)


def test_sparse_fillers_for_long_gaps():
    # 3-bit gaps, filler F = 7: skips of 7 (leading), 7, 21 (= 3F), 2, 6 and 8
    pos = np.array([7, 15, 37, 40, 47, 56])
    gaps = sparse.encode(pos, 3)
    assert gaps.tolist() == [7, 0, 7, 0, 7, 7, 7, 0, 2, 6, 7, 1]
    assert np.array_equal(sparse.decode(gaps, 3, 57), pos)
    pos = np.array([7, 15, 37, 40])
    gaps = sparse.encode(pos, 3)
    assert np.array_equal(sparse.decode(gaps, 3, 41), pos)
    with pytest.raises(FormatError, match="outside"):
        sparse.decode(gaps, 3, 40)
    with pytest.raises(FormatError, match="filler"):
        sparse.decode(np.array([0, 7]), 3, 100)


def _layer(rng, shape, density, empty_rows=()):
    w = rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) < density)
    for r in empty_rows:
        w[r] = 0
    return w.astype(np.float32)


def _share(w, k, rng):
    book = np.sort(rng.standard_normal(k)).astype(np.float32)
    idx = np.abs(w[..., None] - book).argmin(-1)
    return np.where(w != 0, book[idx], 0).astype(np.float32), book


@pytest.mark.parametrize("store", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("huff", [False, True])
def test_dc_round_trip(store, huff):
    rng = np.random.default_rng(3)
    cases = [
        _layer(rng, (40, 70), 0.03, empty_rows=(0, 5, 6, 39)),   # long gaps, empty rows
        _layer(rng, (20, 1, 5, 5), 1.0),                          # fully dense conv
        np.zeros((7, 9), np.float32),                              # all pruned
        _layer(rng, (1,), 1.0),
    ]
    for w in cases:
        e = compressed.encode(w, index_bits=3, store=store, huffman_index=huff)
        assert np.array_equal(compressed.decode(e.entry, e.data), w)
        for k in (1, 4, 32):
            q, book = _share(w, k, rng)
            e = compressed.encode(q, codebook=book, index_bits=5, store=store,
                                  huffman_index=huff, huffman_values=huff)
            out = compressed.decode(e.entry, e.data)
            assert out.dtype == np.float32 and np.array_equal(out, q)
            assert e.stats["bytes"] == len(e.data)


def test_dc_auto_picks_smaller_and_float16():
    rng = np.random.default_rng(4)
    dense = _layer(rng, (50, 50), 0.9)
    sparse_w = _layer(rng, (50, 50), 0.05)
    assert compressed.encode(dense).stats["store"] == "dense"
    assert compressed.encode(sparse_w).stats["store"] == "sparse"
    q, book = _share(sparse_w, 16, rng)
    with pytest.raises(ValueError, match="not in the codebook"):
        compressed.encode(q, codebook=book, value_dtype="f2")
    q16 = q.astype(np.float16).astype(np.float32)
    e = compressed.encode(q16, codebook=book, value_dtype="f2")
    assert np.array_equal(compressed.decode(e.entry, e.data), q16)
    assert e.stats["codebook_bytes"] == 32


def _small_model_blob():
    rng = np.random.default_rng(5)
    w = _layer(rng, (10, 30), 0.2)
    q, book = _share(w, 8, rng)
    tensors = {"fc.weight": codec.model.dc(q, codebook=book, index_bits=4,
                                           huffman_index=True, huffman_values=True),
               "fc.bias": codec.model.raw(rng.standard_normal(10).astype(np.float32))}
    graph = {"ops": [{"op": "dense", "weight": "fc.weight", "bias": "fc.bias"}]}
    return codec.model.encode(graph, tensors, {"model": "tiny"}), q


def test_model_file_round_trip(tmp_path):
    blob, q = _small_model_blob()
    path = tmp_path / "tiny.lbm"
    path.write_bytes(blob)
    mf = codec.load(path)
    assert mf.meta == {"model": "tiny"} and mf.graph["ops"][0]["op"] == "dense"
    assert np.array_equal(mf.tensor("fc.weight"), q)
    assert set(mf.tensors) == {"fc.weight", "fc.bias"}


def test_model_file_any_flip_or_truncation_is_refused():
    blob, _ = _small_model_blob()
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x10
        with pytest.raises(FormatError):
            mf = codec.model.from_container("x", *container.decode(bytes(bad)))
            mf.tensors  # even if the container were fooled, decoding must not succeed
    for n in range(0, len(blob), 7):
        with pytest.raises(FormatError):
            container.decode(blob[:n])
