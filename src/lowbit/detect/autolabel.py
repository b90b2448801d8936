"""Boxes of moving objects seen by a static camera, by background subtraction (no training).

Per frame::

    frame (H, W[, 3]) uint8 -> gain (scaled to the background's median brightness: global
    lighting changes are not motion) -> MOG2 / KNN foreground mask (H, W) -> threshold
    (shadows, 127, dropped) -> open (kernel ``open_px``: removes speckle) -> close
    (``close_px``: fills holes, joins the parts of one object) -> connected components
    (8-connected) -> boxes of components with area >= ``min_area`` px

A box is ``x, y, x + w, y + h`` of the component's stats (x2 / y2 exclusive, as in
:class:`lowbit.detect.Detections`); its confidence is the component's fill ratio
``area / (w * h)`` (a solid blob scores near 1, a thin or ragged one lower).

:class:`BackgroundSubtractorDetector` is that as a callable ``frame -> Detections`` (the
traditional baseline detector for tracking); :meth:`~BackgroundSubtractorDetector.prime`
starts its model from a background image (e.g. the median of the first frames) instead of
from the first frame, so objects present at the start leave no ghosts.  :func:`autolabel`
runs it over a video and writes a YOLO data set of the frames after the warm-up.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

from lowbit.data.detset import atomic_dir
from lowbit.data.idx import DataError
from lowbit.data.video import open_video
from lowbit.data.yolo import write_data_yaml, write_labels
from lowbit.detect.detections import Detections

__all__ = ["BackgroundSubtractorDetector", "autolabel", "autolabel_command", "video_background",
           "METHODS"]

METHODS = ("mog2", "knn")


def _cv2():
    try:
        import cv2
    except ImportError:
        raise DataError("background subtraction needs OpenCV: pip install 'lowbit[detect]'"
                        ) from None
    return cv2


class BackgroundSubtractorDetector:
    """``detector(frame) -> Detections`` (class 0) from OpenCV background subtraction.

    ``method`` ``"mog2"`` (``var_threshold``: squared Mahalanobis distance, default 16;
    ``var_min``: floor of each pixel's variance, default 16 = 4 levels, so codec noise of a
    noise-free scene is not motion) or ``"knn"`` (``var_threshold`` is its squared distance
    threshold, default 400); ``history`` frames of memory; ``learning_rate`` -1 = OpenCV's
    automatic rate (fast at first, then ``1 / history``); ``shadows`` detects shadows and
    drops them from the mask; ``gain`` undoes global brightness changes (:meth:`normalize`);
    ``open_px`` / ``close_px`` the morphology kernels; ``min_area`` the smallest blob (px).
    Stateful: call it on the frames of one video in order; unprimed, the first frame is the
    background; :meth:`reset` forgets it."""

    def __init__(self, method: str = "mog2", *, history: int = 500,
                 var_threshold: float | None = None, min_area: int = 20, open_px: int = 3,
                 close_px: int = 3, shadows: bool = False, learning_rate: float = -1.0,
                 var_min: float = 16.0, gain: bool = True, class_id: int = 0):
        if method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
        if history < 1 or min_area < 1 or open_px < 0 or close_px < 0:
            raise ValueError("history and min_area must be >= 1, open_px / close_px >= 0")
        self.method, self.history, self.shadows = method, int(history), bool(shadows)
        self.var_threshold = float(var_threshold if var_threshold is not None
                                   else (16.0 if method == "mog2" else 400.0))
        self.min_area, self.learning_rate, self.class_id = int(min_area), learning_rate, class_id
        self.open_px, self.close_px = int(open_px), int(close_px)
        self.var_min, self.gain = float(var_min), bool(gain)
        self._ref: float | None = None
        self.mask: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        cv2 = _cv2()
        if self.method == "mog2":
            self._sub = cv2.createBackgroundSubtractorMOG2(self.history, self.var_threshold,
                                                           self.shadows)
            self._sub.setVarMin(self.var_min)
            self._sub.setVarInit(max(15.0, self.var_min))
        else:
            self._sub = cv2.createBackgroundSubtractorKNN(self.history, self.var_threshold,
                                                          self.shadows)
        self._ref = None

    @staticmethod
    def _bgr(frame: np.ndarray) -> np.ndarray:
        f = np.asarray(frame)
        if f.dtype != np.uint8 or f.ndim not in (2, 3) or (f.ndim == 3 and f.shape[2] not in
                                                            (1, 3)):
            raise ValueError(f"frame: expected uint8 (H, W) or (H, W, 3), got {f.dtype} "
                             f"{f.shape}")
        return f[..., 0] if f.ndim == 3 and f.shape[2] == 1 else f

    def normalize(self, frame: np.ndarray) -> np.ndarray:
        """With ``gain``, the frame scaled so its median brightness is the reference's (the
        primed background's, else the first frame's): undoes global lighting changes."""
        f = self._bgr(frame)
        if not self.gain:
            return f
        med = float(np.median(f[::2, ::2]))
        if self._ref is None:
            self._ref = med
        if med <= 0 or abs(med - self._ref) < 0.5:
            return f
        return np.clip(f * np.float32(self._ref / med) + 0.5, 0, 255).astype(np.uint8)

    def prime(self, background: np.ndarray, times: int = 30) -> None:
        """Teach the model ``background`` (an image like the frames) ``times`` times; it
        also becomes the brightness reference of :meth:`normalize`."""
        bg = self._bgr(background)
        self._ref = float(np.median(bg[::2, ::2]))
        for k in range(times):
            self._sub.apply(bg, learningRate=1.0 / (k + 1))

    def foreground(self, frame: np.ndarray) -> np.ndarray:
        """The cleaned foreground mask, uint8 ``(H, W)`` 0 / 255 (also kept in ``.mask``)."""
        cv2 = _cv2()
        if self._ref is None:  # never primed: the first frame is the background
            self.prime(frame, times=1)
        raw = self._sub.apply(self.normalize(frame), learningRate=self.learning_rate)
        m = np.where(raw == 255, 255, 0).astype(np.uint8)  # 127 = shadow
        for op, k in ((cv2.MORPH_OPEN, self.open_px), (cv2.MORPH_CLOSE, self.close_px)):
            if k > 1:
                ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
                m = cv2.morphologyEx(m, op, ker)
        self.mask = m
        return m

    def __call__(self, frame: np.ndarray) -> Detections:
        cv2 = _cv2()
        m = self.foreground(frame)
        n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        s = stats[1:n]
        s = s[s[:, cv2.CC_STAT_AREA] >= self.min_area]
        if not len(s):
            return Detections.empty()
        x, y, w, h, area = (s[:, k].astype(np.float32) for k in range(5))
        xyxy = np.stack([x, y, x + w, y + h], 1)
        return Detections(xyxy, area / (w * h), np.full(len(s), self.class_id, np.int64))


def _median_background(frames: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of up to 50 evenly spaced frames (moving objects drop out)."""
    pick = np.linspace(0, len(frames) - 1, min(50, len(frames))).round().astype(int)
    return np.median(np.stack([frames[i] for i in pick]), axis=0).astype(np.uint8)


def video_background(video, *, max_frames: int | None = None, samples: int = 50):
    """The median of ``samples`` frames spread over a whole video file (first
    ``max_frames``), or None when the length is unknown (a camera, a stream)."""
    with open_video(video) as src:
        n = src.frame_count if max_frames is None or src.frame_count < 0 \
            else min(src.frame_count, max_frames)
        if n <= 0:
            return None
        step = max(1, n // samples)
        frames = [f for i, _, f in src if i < n and i % step == 0]
    return _median_background(frames) if frames else None


def _label_frames(det, items, root: Path, max_frames: int | None, motion: int = 0,
                  before=()) -> tuple[list, int]:
    """Detect, then write image and label file of each ``(index, seconds, frame)``; with
    ``motion`` = k also the gray frame ``max(i - k, 0)`` (``before``: the frames already read,
    in order)."""
    import cv2
    written, boxes = [], 0
    earlier = deque(before, maxlen=motion + 1)
    for i, t, frame in items:
        if max_frames is not None and i >= max_frames:
            break
        d = det(frame)
        h, w = frame.shape[:2]
        bgr = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / "images" / "train" / f"{i:06d}.png"), bgr)
        if motion:
            earlier.append(frame)
            e = earlier[0]
            cv2.imwrite(str(root / "motion" / "train" / f"{i:06d}.png"),
                        e if e.ndim == 2 else cv2.cvtColor(e, cv2.COLOR_RGB2GRAY))
        write_labels(root / "labels" / "train" / f"{i:06d}.txt", d.xyxy, d.class_id, (w, h))
        written.append([i, round(t, 6)])
        boxes += len(d)
    return written, boxes


def autolabel(video, out_dir, *, method: str = "mog2", min_area: int = 20, warmup: int = 30,
              history: int = 500, var_threshold: float | None = None,
              learning_rate: float = 0.002, open_px: int = 3, close_px: int = 3,
              background: str = "video", max_frames: int | None = None,
              name: str = "object", timestamps=None, motion: int = 0,
              overwrite: bool = False, progress: bool = True) -> dict:
    """Label the moving objects of ``video`` (static camera) into a YOLO data set at
    ``out_dir``: ``images/train/NNNNNN.png`` (NNNNNN = frame index), ``labels/train/*.txt``
    (class 0 = ``name``), ``data.yaml``, and ``frames.json`` (``[[index, seconds], ...]`` of
    the written frames).

    The model is primed with a background image: ``background="video"`` the median of frames
    spread over the whole file (a first pass; best, as slow objects drop out), ``"warmup"``
    (or a camera / stream) the median of the first ``warmup`` frames.  The first ``warmup``
    frames then run through the model and are not written.  At most ``max_frames`` frames
    are read (warm-up included).  The folder is written whole; a non-empty ``out_dir`` is
    refused unless ``overwrite``.  ``motion`` = k > 0 also writes each frame's frame k
    earlier in gray (``motion/train/``, ``motion: k`` in data.yaml: the data set of a detector
    that sees motion, :mod:`lowbit.data.yolo`).  Returns ``{"out", "frames", "boxes",
    "seconds"}``."""
    import json

    from tqdm import tqdm
    start = time.perf_counter()
    if warmup < 0 or (max_frames is not None and max_frames < 1):
        raise ValueError("warmup must be >= 0 and max_frames >= 1")
    if isinstance(motion, bool) or not isinstance(motion, int) or motion < 0:
        raise ValueError(f"motion: expected a number of frames >= 0, got {motion!r}")
    if background not in ("video", "warmup"):
        raise ValueError(f"background: expected video or warmup, got {background!r}")
    det = BackgroundSubtractorDetector(method, history=history, var_threshold=var_threshold,
                                       min_area=min_area, open_px=open_px, close_px=close_px,
                                       learning_rate=learning_rate)
    with open_video(video, timestamps=timestamps) as src, atomic_dir(out_dir, overwrite) as root:
        (root / "images" / "train").mkdir(parents=True)
        (root / "labels" / "train").mkdir(parents=True)
        if motion:
            (root / "motion" / "train").mkdir(parents=True)
        bg = video_background(video, max_frames=max_frames) \
            if background == "video" and src.frame_count > 0 else None
        total = src.frame_count if src.frame_count > 0 else None
        if max_frames is not None:
            total = min(total or max_frames, max_frames)
        items = iter(tqdm(src, total=total, desc="autolabel", unit="frame", leave=False,
                          file=sys.stderr, disable=None if progress else True))
        head = [x for _, x in zip(range(warmup), items)]
        if bg is not None or head:
            det.prime(bg if bg is not None else _median_background([f for _, _, f in head]))
        for _, _, frame in head:
            det(frame)
        written, boxes = _label_frames(det, items, root, max_frames, motion,
                                       [f for _, _, f in head])
        (root / "frames.json").write_text(json.dumps(written))
        write_data_yaml(root, (name,), path=Path(out_dir), motion=motion,
                        comment=f"lowbit autolabel ({method}) of {video}")
    return {"out": Path(out_dir), "frames": len(written), "boxes": boxes,
            "seconds": time.perf_counter() - start}


def autolabel_command(video, out, *, method: str = "mog2", min_area: int = 20,
                      warmup: int = 30, history: int = 500, var_threshold: float | None = None,
                      learning_rate: float = 0.002, background: str = "video",
                      max_frames: int | None = None, name: str = "object", timestamps=None,
                      motion: int = 0, overwrite: bool = False, progress: bool = True) -> int:
    """``lowbit detect autolabel``: one result line on stdout, 0; a user error is one
    ``lowbit detect autolabel: error: ...`` line on stderr and 2."""
    try:
        r = autolabel(video, out, method=method, min_area=min_area, warmup=warmup,
                      history=history, var_threshold=var_threshold,
                      learning_rate=learning_rate, background=background, max_frames=max_frames,
                      name=name, timestamps=timestamps, motion=motion, overwrite=overwrite,
                      progress=progress)
    except (ValueError, FileExistsError, OSError) as e:
        print(f"lowbit detect autolabel: error: {e}", file=sys.stderr)
        return 2
    print(f"labelled {r['frames']} frames, {r['boxes']} boxes ({method}) to {r['out']} in "
          f"{r['seconds']:.1f} s")
    return 0
