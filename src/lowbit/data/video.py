"""Video in and out through OpenCV: :func:`open_video` and :class:`VideoWriter`.

``open_video(source)`` reads anything ``cv2.VideoCapture`` reads (a file, a URL such as
``rtsp://...``) or a camera (an int, or a string of digits) and yields
``(index, timestamp_seconds, frame)`` with ``frame`` uint8 ``(H, W, 3)`` RGB (``(H, W)`` with
``gray=True``).  Timestamps, in this order of preference:

1. ``timestamps=``: a JSON list of seconds per frame (the ``timestamps.json`` that
   :func:`lowbit.data.synth.make_video` writes; ``"auto"`` takes ``timestamps.json`` next to
   the video file when there is one);
2. the container's own time of the frame just read (``CAP_PROP_POS_MSEC``), when it is >= 0
   and later than the previous frame's;
3. ``index / fps``, or for a source without a frame rate (some cameras) the time since open.

Timestamps are made strictly increasing.  OpenCV is imported only when a video is opened
(it is in the ``detect`` extra).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .idx import DataError

__all__ = ["open_video", "VideoReader", "VideoWriter", "read_timestamps"]


def _cv2():
    try:
        import cv2
    except ImportError:
        raise DataError("video needs OpenCV: pip install 'lowbit[detect]' "
                        "(opencv-python-headless)") from None
    return cv2


def read_timestamps(path: str | os.PathLike) -> list[float]:
    """A JSON list of seconds, checked finite and strictly increasing."""
    path = Path(path)
    try:
        ts = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable JSON list of seconds ({e})") from None
    if not isinstance(ts, list) or not all(isinstance(t, (int, float)) and not
                                           isinstance(t, bool) for t in ts):
        raise DataError(f"{path}: expected a JSON list of seconds (numbers)")
    a = np.asarray(ts, np.float64)
    if len(a) and (not np.isfinite(a).all() or (np.diff(a) <= 0).any()):
        bad = int(np.argmax(~np.isfinite(a))) if not np.isfinite(a).all() else \
            int(np.argmax(np.diff(a) <= 0)) + 1
        raise DataError(f"{path}: entry {bad}: timestamps must be finite and strictly "
                        f"increasing, got {ts[bad]}")
    return [float(t) for t in a]


class VideoReader:
    """An open video; iterate it once for ``(index, seconds, frame)``.

    ``fps`` (0.0 when unknown), ``frame_count`` (-1 when unknown, e.g. cameras), ``size``
    ``(W, H)``.  Use as a context manager or call :meth:`close`."""

    def __init__(self, source, *, timestamps=None, gray: bool = False):
        self._cap = None
        cv2 = _cv2()
        self.gray = gray
        if isinstance(source, str) and source.strip().isdigit():
            source = int(source.strip())
        self.source = source
        if isinstance(source, int):
            self.name = f"camera {source}"
        else:
            self.name = str(source)
            if "://" not in self.name and not Path(self.name).is_file():
                raise DataError(f"{self.name}: file not found")
        self._cap = cv2.VideoCapture(source if isinstance(source, int) else self.name)
        if not self._cap.isOpened():
            self._cap.release()
            raise DataError(f"{self.name}: cannot open video (OpenCV cannot read it)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(n) if n and n > 0 and isinstance(source, (str, os.PathLike)) \
            else -1
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.timestamps = self._load_timestamps(timestamps)
        self._index, self._last, self._t0 = 0, -np.inf, time.monotonic()

    def _load_timestamps(self, timestamps):
        if timestamps is None:
            return None
        if timestamps == "auto":
            if isinstance(self.source, int):
                return None
            p = Path(self.name).with_name("timestamps.json")
            if not p.is_file():
                return None
            timestamps = p
        ts = read_timestamps(timestamps)
        if self.frame_count > 0 and len(ts) != self.frame_count:
            raise DataError(f"{timestamps}: {len(ts)} timestamps but {self.name} has "
                            f"{self.frame_count} frames")
        return ts

    def _time(self, i: int) -> float:
        cv2 = _cv2()
        if self.timestamps is not None:
            if i >= len(self.timestamps):
                raise DataError(f"{self.name}: frame {i} has no timestamp (the list has "
                                f"{len(self.timestamps)})")
            t = self.timestamps[i]
        else:
            ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            t = ms / 1000.0 if ms is not None and np.isfinite(ms) and ms >= 0 else -1.0
            if t < 0 or t <= self._last or (i > 0 and t == 0):
                t = i / self.fps if self.fps > 0 else time.monotonic() - self._t0
        t = max(t, self._last + 1e-6) if np.isfinite(self._last) else t
        self._last = t
        return float(t)

    def read(self):
        """The next ``(index, seconds, frame)``, or None at the end."""
        if self._cap is None:
            return None
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        cv2 = _cv2()
        if bgr.ndim == 2:
            frame = bgr if self.gray else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        else:
            frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY if self.gray else cv2.COLOR_BGR2RGB)
        i = self._index
        self._index += 1
        return i, self._time(i), frame

    def __iter__(self):
        while True:
            item = self.read()
            if item is None:
                return
            yield item

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def open_video(source, *, timestamps=None, gray: bool = False) -> VideoReader:
    """Open a video file / URL / camera (int or digit string); see the module doc."""
    return VideoReader(source, timestamps=timestamps, gray=gray)


class VideoWriter:
    """Write frames (uint8 ``(H, W, 3)`` RGB or ``(H, W)`` gray) to ``path`` (mp4v by default).

    Frames go to a temporary file beside ``path``, renamed to ``path`` on :meth:`close`
    (removed instead if the ``with`` block fails).  ``size=(W, H)``."""

    def __init__(self, path, fps: float, size: tuple[int, int], *, fourcc: str = "mp4v"):
        self._w = None
        cv2 = _cv2()
        if not fps > 0:
            raise ValueError(f"fps: expected > 0, got {fps}")
        self.path, self.size = Path(path), (int(size[0]), int(size[1]))
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.tmp-", suffix=self.path.suffix,
                                   dir=self.path.parent)
        os.close(fd)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; the video is an ordinary file
        self._tmp = Path(tmp)
        self._w = cv2.VideoWriter(tmp, cv2.VideoWriter.fourcc(*fourcc), float(fps), self.size)
        if not self._w.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise DataError(f"{self.path}: cannot write video (codec {fourcc!r})")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        cv2 = _cv2()
        f = np.asarray(frame, np.uint8)
        if f.shape[:2] != (self.size[1], self.size[0]):
            raise ValueError(f"frame: expected {self.size[1]}x{self.size[0]} (HxW), got "
                             f"{f.shape[:2]}")
        f = cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 or f.shape[2] == 1 \
            else cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
        self._w.write(f)
        self.frames += 1

    def close(self) -> Path:
        if self._w is not None:
            self._w.release()
            self._w = None
            os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._w is not None:
            self._w.release()
            self._w = None
            self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.abort() if exc_type else self.close()
