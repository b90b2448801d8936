"""IDX reader / writer: good files (raw and .gz), and every way a file can be broken."""
import gzip

import numpy as np
import pytest

from lowbit.data import DataError, read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((3, 5, 7)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype).newbyteorder("=")
    assert got.shape == (3, 5, 7)
    np.testing.assert_array_equal(got, arr)
    assert not list(tmp_path.glob(".*tmp*")), "writer left a temp file behind"


def test_reads_hand_made_big_endian_bytes(tmp_path):
    # int16, rank 2, dims (2, 2), values 1, -2, 256, 3 big-endian: checks the layout itself,
    # not only that reader and writer agree with each other.
    raw = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 1, 0xFF, 0xFE, 1, 0, 0, 3])
    (tmp_path / "h.idx").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "h.idx"), [[1, -2], [256, 3]])
    assert write_idx(tmp_path / "w.idx", np.array([[1, -2], [256, 3]], np.int16)).read_bytes() == raw


def _good(tmp_path, name="x.idx"):
    return write_idx(tmp_path / name, np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28))


def test_truncated_raw(tmp_path):
    p = _good(tmp_path)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"x\.idx: data length: expected 3136 bytes .* got 3036 \(truncated\)"):
        read_idx(p)


def test_trailing_bytes(tmp_path):
    p = _good(tmp_path)
    p.write_bytes(p.read_bytes() + b"\0")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(p)


def test_truncated_gzip_stream(tmp_path):
    p = _good(tmp_path, "x.idx.gz")
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"x\.idx\.gz: corrupt or truncated gzip"):
        read_idx(p)


def test_gzip_of_truncated_payload(tmp_path):
    raw = _good(tmp_path).read_bytes()[:-1]
    p = tmp_path / "short.idx.gz"
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match=r"short\.idx\.gz: data length"):
        read_idx(p)


def test_truncated_header(tmp_path):
    p = tmp_path / "h.idx"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 4, 0, 0]))
    with pytest.raises(DataError, match="truncated header"):
        read_idx(p)
    p.write_bytes(b"\0\0")
    with pytest.raises(DataError, match="header: expected at least 4 bytes, got 2"):
        read_idx(p)


@pytest.mark.parametrize("magic, message", [
    (bytes([0x1F, 0x8B, 8, 3]), "magic: expected 0x0000"),
    (bytes([0, 1, 8, 3]), "magic: expected 0x0000"),
    (bytes([0, 0, 0x07, 3]), "dtype code: expected one of .* got 0x07"),
    (bytes([0, 0, 0x08, 0]), "rank: expected at least 1, got 0"),
])
def test_wrong_magic(tmp_path, magic, message):
    p = _good(tmp_path)
    p.write_bytes(magic + p.read_bytes()[4:])
    with pytest.raises(DataError, match=message) as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_not_gzip_but_named_gz(tmp_path):
    p = tmp_path / "fake.idx.gz"
    p.write_bytes(_good(tmp_path).read_bytes())
    with pytest.raises(DataError, match="gzip"):
        read_idx(p)


def test_expectations(tmp_path):
    p = write_idx(tmp_path / "big.idx", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"big\.idx: dims: expected \(\*, 28, 28\), got \(2, 32, 32\)"):
        read_idx(p, shape=(None, 28, 28))
    with pytest.raises(DataError, match="rank: expected 1, got 3"):
        read_idx(p, rank=1)
    with pytest.raises(DataError, match="dtype: expected float32, got uint8"):
        read_idx(p, dtype="float32")
    assert read_idx(p, dtype="uint8", rank=3, shape=(None, 32, None)).shape == (2, 32, 32)


def test_missing_file_and_unwritable_dtype(tmp_path):
    with pytest.raises(DataError, match="nope.idx: file not found"):
        read_idx(tmp_path / "nope.idx")
    with pytest.raises(DataError, match="IDX cannot store bool"):
        write_idx(tmp_path / "b.idx", np.zeros(3, bool))
    assert issubclass(DataError, ValueError)
