"""Container: round trip, atomic write, and refusal of every corruption / truncation."""
import json
import os
import struct
import zlib

import numpy as np
import pytest

from lowbit.codec import FormatError, container


def _sample():
    rng = np.random.default_rng(0)
    header = {"name": "t", "graph": {"ops": [{"op": "relu"}]}, "acc": 0.5, "n": np.int64(3)}
    sections = {
        "w": rng.standard_normal((3, 5)).astype(np.float32),
        "idx": rng.integers(0, 255, 17).astype(np.uint8),
        "blob": b"hello world",
        "empty": np.zeros((0, 4), np.float64),
        "big_endian": np.arange(5, dtype=">i4"),
        "flags": np.array([True, False, True]),
    }
    return header, sections


def test_round_trip_bit_exact(tmp_path):
    header, sections = _sample()
    path = tmp_path / "m.lbm"
    n = container.save(path, header, sections)
    assert n == os.path.getsize(path) and n % 64 == 0
    h, s = container.load(path)
    assert h == {**header, "n": 3}
    assert list(s) == list(sections)
    for k, v in sections.items():
        if isinstance(v, bytes):
            assert s[k] == v
        else:
            assert s[k].shape == v.shape and np.array_equal(s[k], v)
            assert s[k].dtype == v.dtype.newbyteorder("<")
            assert s[k].ctypes.data % 64 == 0 or s[k].size == 0
    assert container.read_header(path) == h
    assert container.is_container(path) and not container.is_container(tmp_path / "nope")
    assert container.encode(header, sections) == path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["m.lbm"]  # no temp file left behind
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_every_single_byte_flip_and_truncation_is_refused():
    header, sections = _sample()
    blob = container.encode(header, sections)
    assert len(blob) < 1200
    for i in range(len(blob)):
        for delta in (1, 0x80):
            bad = bytearray(blob)
            bad[i] ^= delta
            with pytest.raises(FormatError):
                container.decode(bytes(bad))
    for n in range(len(blob)):
        with pytest.raises(FormatError, match="truncated|not a lowbit"):
            container.decode(blob[:n])
    with pytest.raises(FormatError, match="trailing"):
        container.decode(blob + b"\0")


def test_error_names_file_and_section(tmp_path):
    header, sections = _sample()
    path = tmp_path / "m.lbm"
    container.save(path, header, sections)
    h = container.read_header(path)
    raw = bytearray(path.read_bytes())
    flags, hlen = struct.unpack_from("<I", raw, 12)[0], struct.unpack_from("<Q", raw, 24)[0]
    text = bytes(raw[64:64 + hlen])
    doc = json.loads(zlib.decompress(text) if flags & 1 else text)
    base = 64 + hlen + (-hlen) % 64
    idx = next(e for e in doc["sections"] if e["name"] == "idx")
    raw[base + idx["offset"] + 3] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"m\.lbm.*section 'idx'.*CRC32"):
        container.load(path)
    path.write_bytes(bytes(raw[:100]))
    with pytest.raises(FormatError, match=r"m\.lbm.*truncated"):
        container.load(path)
    path.write_bytes(b"PK\x03\x04 a zip, not ours" * 4)
    with pytest.raises(FormatError, match="not a lowbit model file"):
        container.load(path)
    assert h["name"] == "t"


@pytest.mark.parametrize("version,match", [(2, "newer.*upgrade"), (0, "older")])
def test_unknown_versions_are_refused(version, match):
    header, sections = _sample()
    blob = bytearray(container.encode(header, sections))
    struct.pack_into("<I", blob, 8, version)
    struct.pack_into("<I", blob, 60, zlib.crc32(bytes(blob[:60])))
    with pytest.raises(FormatError, match=match):
        container.decode(bytes(blob))


def test_bad_input_to_save(tmp_path):
    with pytest.raises(ValueError, match="section 'o'"):
        container.save(tmp_path / "x", {}, {"o": np.array([object()])})
    with pytest.raises(TypeError, match="section 'l'"):
        container.save(tmp_path / "x", {}, {"l": [1, 2]})
    with pytest.raises(ValueError, match="JSON"):
        container.save(tmp_path / "x", {"a": float("nan")}, {})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("meta_size", [0, 3000])
def test_header_deflated_only_when_smaller(meta_size):
    header = {"notes": "abc " * (meta_size // 4)}
    blob = container.encode(header, {"a": np.arange(3, dtype=np.int16)})
    flags = struct.unpack_from("<I", blob, 12)[0]
    assert flags == (1 if meta_size else 0)
    h, s = container.decode(blob)
    assert h == header and s["a"].tolist() == [0, 1, 2]
    if meta_size:
        assert len(blob) < meta_size // 2
