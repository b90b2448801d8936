"""Video reader / writer round trip: frame count, shapes, timestamps (container, list file,
synthetic jitter), atomic writing and the errors."""
import json

import numpy as np
import pytest

pytest.importorskip("cv2")

from lowbit.data import DataError, VideoWriter, open_video  # noqa: E402
from lowbit.data.video import read_timestamps  # noqa: E402


def _frames(n=12, w=64, h=48):
    yy, xx = np.mgrid[0:h, 0:w]
    return [np.dstack([(xx * 4 + i * 10) % 256, (yy * 5) % 256, np.full_like(xx, 40 + i * 8)])
            .astype(np.uint8) for i in range(n)]


@pytest.fixture
def mp4(tmp_path):
    with VideoWriter(tmp_path / "v.mp4", 25.0, (64, 48)) as w:
        for f in _frames():
            w.write(f)
        assert not (tmp_path / "v.mp4").exists()  # only renamed on close
    return tmp_path / "v.mp4"


def test_round_trip(mp4):
    with open_video(mp4) as v:
        assert v.fps == 25.0 and v.frame_count == 12 and v.size == (64, 48)
        items = list(v)
    assert [i for i, _, _ in items] == list(range(12))
    ts = np.array([t for _, t, _ in items])
    np.testing.assert_allclose(ts, np.arange(12) / 25.0, atol=1e-3)
    frame = items[5][2]
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    # lossy codec, but RGB order and content survive: channel means within a few levels
    np.testing.assert_allclose(frame.mean((0, 1)), _frames()[5].mean((0, 1)), atol=6)
    gray = [f for _, _, f in open_video(str(mp4), gray=True)]
    assert len(gray) == 12 and gray[0].shape == (48, 64)
    assert [p.name for p in mp4.parent.iterdir()] == ["v.mp4"]  # no temp file left


def test_gray_frames_in(tmp_path):
    with VideoWriter(tmp_path / "g.mp4", 10.0, (32, 32)) as w:
        for f in _frames(3, 32, 32):
            w.write(f[..., 0])
        with pytest.raises(ValueError, match="expected 32x32"):
            w.write(np.zeros((8, 8), np.uint8))
    assert len(list(open_video(tmp_path / "g.mp4"))) == 3


def test_timestamp_list(mp4):
    ts = [0.0, 0.05, 0.07, 0.2] + [0.3 + 0.04 * k for k in range(8)]
    (mp4.parent / "timestamps.json").write_text(json.dumps(ts))
    assert [t for _, t, _ in open_video(mp4, timestamps="auto")] == ts
    assert [t for _, t, _ in open_video(mp4, timestamps=mp4.parent / "timestamps.json")] == ts
    (mp4.parent / "short.json").write_text(json.dumps(ts[:5]))
    with pytest.raises(DataError, match="5 timestamps but .* has 12 frames"):
        open_video(mp4, timestamps=mp4.parent / "short.json")
    (mp4.parent / "bad.json").write_text(json.dumps([0, 0.1, 0.1]))
    with pytest.raises(DataError, match="bad.json: entry 2: timestamps must be .* increasing"):
        read_timestamps(mp4.parent / "bad.json")
    (mp4.parent / "timestamps.json").unlink()
    assert [t for _, t, _ in open_video(mp4, timestamps="auto")][1] == pytest.approx(0.04)


def test_errors(tmp_path):
    with pytest.raises(DataError, match="nope.mp4: file not found"):
        open_video(tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\0junk" * 10)
    with pytest.raises(DataError, match="junk.mp4: cannot open video"):
        open_video(tmp_path / "junk.mp4")
    with pytest.raises(DataError, match="camera 97: cannot open"):
        open_video("97")
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "x.mp4", 0, (32, 32))
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "y.mp4", 10, (32, 32)) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.mp4"]
