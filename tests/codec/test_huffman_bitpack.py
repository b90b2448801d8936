"""Canonical Huffman and fixed-width packing round trips, incl. degenerate streams."""
import numpy as np
import pytest

from lowbit.codec import FormatError, bitpack, huffman


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
@pytest.mark.parametrize("k", [1, 2, 3, 32, 256])
def test_huffman_round_trip(n, k):
    rng = np.random.default_rng(n * 1000 + k)
    s = rng.integers(0, k, n)
    e = huffman.encode(s, k)
    assert e.lengths.shape == (k,)
    assert np.array_equal(huffman.decode(e.lengths, e.payload, n), s)
    lens = huffman.unpack_lengths(huffman.pack_lengths(e.lengths), k)
    assert np.array_equal(lens, e.lengths)


def test_huffman_degenerate_streams():
    e = huffman.encode(np.array([], np.int64), 8)
    assert e.payload == b"" and not e.lengths.any()
    assert huffman.decode(e.lengths, b"", 0).size == 0
    e = huffman.encode(np.full(20, 5), 8)
    assert e.lengths.tolist() == [0, 0, 0, 0, 0, 1, 0, 0] and e.nbits == 20
    assert huffman.decode(e.lengths, e.payload, 20).tolist() == [5] * 20


def test_huffman_is_near_entropy_and_canonical():
    rng = np.random.default_rng(1)
    s = np.minimum(rng.geometric(0.3, 20000) - 1, 31)
    e = huffman.encode(s, 32)
    p = np.bincount(s, minlength=32) / s.size
    entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
    assert entropy <= e.nbits / s.size < entropy + 0.1
    codes = huffman.codes(e.lengths)  # canonical: shorter codes first, prefix free
    words = sorted(codes.values(), key=lambda c: (len(c), c.to01()))
    for i, a in enumerate(words):
        for b in words[i + 1:]:
            assert b[:len(a)] != a


def test_huffman_length_limit_with_fibonacci_frequencies():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman._lengths_from_freq(np.array(fib, dtype=np.int64))
    assert lengths.max() <= huffman.MAX_LEN
    assert sum(2.0 ** -int(n) for n in lengths) <= 1


def test_huffman_refuses_bad_payloads():
    s = np.array([0, 1, 2, 3, 3, 3])
    e = huffman.encode(s, 4)
    with pytest.raises(FormatError):
        huffman.decode(e.lengths, e.payload + b"\0", 6)
    with pytest.raises(FormatError):
        huffman.decode(e.lengths, e.payload, 60)
    with pytest.raises(FormatError, match="prefix"):
        huffman.decode(np.array([1, 1, 1, 0], np.uint8), e.payload, 6)
    with pytest.raises(ValueError):
        huffman.encode(np.array([4]), 4)


@pytest.mark.parametrize("bits", [1, 3, 5, 8, 11, 16, 32])
def test_bitpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 9, 1001):
        v = rng.integers(0, 1 << bits, n, dtype=np.uint64)
        data = bitpack.pack(v, bits)
        assert len(data) == bitpack.nbytes(n, bits)
        assert np.array_equal(bitpack.unpack(data, bits, n), v)


def test_bitpack_layout_and_errors():
    assert bitpack.pack(np.array([1, 2, 3]), 2) == bytes([0b111001])
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        bitpack.pack(np.array([4]), 2)
    with pytest.raises(FormatError, match="expected 1 bytes"):
        bitpack.unpack(b"\0\0", 2, 3)
    with pytest.raises(FormatError, match="pad bits"):
        bitpack.unpack(bytes([0b11000000]), 2, 3)
