"""Video in, tracks and speeds out: :func:`track_video` and the ``lowbit track`` command.

    frames (open_video, real timestamps) -> detector -> Tracker -> bottom centres ->
    Calibration.to_ground -> SpeedEstimator -> tracks.csv, detections.csv, summary.json and
    an annotated video

``detector`` is any callable: one RGB frame -> :class:`Detections` (or a list holding one),
e.g. the MOG2 ``BackgroundSubtractorDetector``; or, when it has ``batched = True``, a list of
frames -> a list of Detections (:class:`ModelFrames` wraps a model-file ``Detector`` so, and
resizes frames to the model's input).  A detector with a ``timings`` dict (seconds) adds its
own split (e.g. runtime / decode) to the summary.

Outputs in ``out_dir`` (each written under a temporary name, then renamed):

- ``tracks.csv``: ``frame,time,id,class,x1,y1,x2,y2,ground_x,ground_y,speed,speed_std`` per
  tracked box (frame from 0; time in s; ground in m; speed and its standard error in m/s,
  empty until the track has enough history or without a calibration);
- ``detections.csv``: ``frame,time,class,x1,y1,x2,y2,confidence``, the detector's raw boxes;
- ``summary.json``: per track first/last frame and time, frames, path length, mean and max
  speed; the pipeline's frames, fps and time split (read / detect / track / speed /
  annotate / write, plus the detector's own);
- ``tracks.mp4``: boxes, ids, trails and speed labels.
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from lowbit.detect.annotate import (DET_COLUMNS, TRACK_COLUMNS, UNITS, Annotator, Outputs,
                                    TrackStats, write_json)
from lowbit.detect.calibration import Calibration, CalibrationError
from lowbit.detect.detections import Detections
from lowbit.detect.speed import SpeedEstimator
from lowbit.detect.track import Tracker, box_colour

__all__ = ["track_video", "track_command", "build_detector", "ModelFrames", "TRACK_COLUMNS",
           "DET_COLUMNS", "fail"]


def fail(cmd: str, message: str) -> int:
    """``lowbit CMD: error: MESSAGE`` on stderr; exit code 2."""
    print(f"lowbit {cmd}: error: {message}", file=sys.stderr)
    return 2


class ModelFrames:
    """A model-file ``Detector`` on video frames: each RGB frame is resized to the model's
    input (and made gray for a 1-channel model), boxes are scaled back to the frame; the
    runtime and decode times are kept apart in ``timings``.  For a motion model (``motion`` =
    k) the frames must come in video order: the gray of frame ``max(i - k, 0)`` is kept and
    stacked as the last channel, as ``lowbit detect synth --motion`` writes its data."""

    batched = True

    def __init__(self, detector):
        self.detector = detector
        self.classes = list(getattr(detector, "classes", []) or [])
        self.timings = {"runtime": 0.0, "decode": 0.0}
        self.motion = int(getattr(detector, "motion", 0) or 0)
        self._earlier = deque(maxlen=self.motion + 1)        # gray (H, W) of the last k + 1

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        c, h, w = self.detector.input_shape
        c -= 1 if self.motion else 0
        if frame.shape[:2] != (h, w):
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        x = frame
        if c == 1 and frame.ndim == 3:
            x = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        elif c == 3 and frame.ndim == 2:
            x = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        x = x.reshape(h, w, -1).transpose(2, 0, 1)                     # (C, H, W)
        if not self.motion:
            return x
        self._earlier.append(frame if frame.ndim == 2 else
                             cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        return np.concatenate([x, self._earlier[0][None]])            # (C + 1, H, W)

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        from lowbit.detect.decode import decode

        det = self.detector
        x = np.ascontiguousarray(np.stack([self._prepare(f) for f in frames]))
        t0 = time.perf_counter()
        maps = det.maps(x)
        t1 = time.perf_counter()
        out = decode(*maps, det.stride, det.threshold, det.topk, image_size=det.input_shape[1:])
        self.timings["runtime"] += t1 - t0
        self.timings["decode"] += time.perf_counter() - t1
        _, h, w = det.input_shape
        for d, f in zip(out, frames):
            d.xyxy = d.xyxy * np.array([f.shape[1] / w, f.shape[0] / h] * 2, np.float32)
        return out


def _frames(source, timestamps, fps: float | None):
    """(iterator of (index, t, frame), nominal fps, frame count or None, closer)."""
    if isinstance(source, (str, os.PathLike, int)):
        from lowbit.data.video import open_video

        reader = open_video(source, timestamps=timestamps)
        n = reader.frame_count if reader.frame_count > 0 else None
        return iter(reader), fps or reader.fps or 30.0, n, reader.close
    n = len(source) if hasattr(source, "__len__") else None
    return iter(source), fps or 30.0, n, lambda: None


def _fmt(v, nd=3):
    return "" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def _batches(frames, size: int):
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _detect(detector, frames: list[np.ndarray]) -> list[Detections]:
    if getattr(detector, "batched", False):
        out = list(detector(frames))
        if len(out) != len(frames):
            raise ValueError(f"the detector returned {len(out)} results for {len(frames)} "
                             f"frames")
        return out
    res = []
    for f in frames:
        d = detector(f)
        res.append(d[0] if isinstance(d, (list, tuple)) else d)
    return res


def track_video(source, detector, out_dir, calibration: Calibration | None = None, *,
                timestamps="auto", fps: float | None = None, tracker: Tracker | None = None,
                speed: SpeedEstimator | None = None, unit: str = "km/h", video: bool = True,
                batch: int = 1, class_names=None, limit: int | None = None,
                edge_margin: float = 1.0, track_thresh: float = 0.5, colour: bool = True,
                progress: bool | None = None) -> dict:
    """Detect, track and measure every frame of ``source`` (a video path / URL / camera index
    read with ``lowbit.data.video.open_video``, or an iterable of ``(index, seconds, frame)``)
    and write the outputs described in the module doc to ``out_dir``; returns the summary.

    ``timestamps``: passed to ``open_video`` (``"auto"``: ``timestamps.json`` beside the
    video); ``fps``: the nominal rate (default: the video's); ``tracker`` / ``speed``: default
    ``Tracker(fps, track_thresh)`` (``colour=False``: without its colour cue) /
    ``SpeedEstimator()``; ``batch``: frames per call of a batched
    detector; ``limit``: stop after that many frames; ``edge_margin`` (px): boxes this close
    to the left, right or bottom edge add no position to the speed fit (their bottom centre
    is cut off); ``progress``: a tqdm bar on stderr (None: only on a terminal)."""
    from tqdm import tqdm

    if unit not in UNITS:
        raise ValueError(f"unit: expected one of {sorted(UNITS)}, got {unit!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, fps, total, close = _frames(source, timestamps, fps)
    tracker = tracker or Tracker(frame_rate=fps, track_thresh=track_thresh,
                                 low_thresh=min(0.1, track_thresh),
                                 **({} if colour else {"appearance": 0.0, "colour_gate": None}))
    speed = speed or SpeedEstimator()
    class_names = class_names if class_names is not None else \
        (getattr(detector, "classes", None) or None)
    annotate = Annotator(unit=unit, class_names=class_names) if video else None
    timings = defaultdict(float)
    stats, outputs, n = TrackStats(), Outputs(out_dir, video), 0
    total = min(total, limit) if total and limit else (limit or total)
    bar = tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True,
               disable=None if progress is None else not progress)
    start, ok = time.perf_counter(), False
    try:
        it = iter(frames)
        for group in _batches(_limited(it, limit, timings), max(1, int(batch))):
            t0 = time.perf_counter()
            dets = _detect(detector, [f for _, _, f in group])
            timings["detect"] += time.perf_counter() - t0
            for (i, t, frame), d in zip(group, dets):
                _one_frame(i, t, frame, d, tracker, calibration, speed, annotate, outputs,
                           stats, timings, fps, edge_margin)
                n += 1
            bar.update(len(group))
            bar.set_postfix(fps=f"{n / max(time.perf_counter() - start, 1e-9):.1f}")
        ok = True
    finally:
        bar.close()
        close()
        outputs.close(ok)
    wall = time.perf_counter() - start
    timings.update({f"detector_{k}": v for k, v in getattr(detector, "timings", {}).items()})
    summary = {"source": str(source) if isinstance(source, (str, os.PathLike, int)) else None,
               "frames": n, "seconds": wall, "fps": n / wall if wall > 0 else None,
               "nominal_fps": fps, "unit": "m/s", "calibration": getattr(calibration, "source",
                                                                         None),
               "calibrated": calibration is not None,
               "tta": bool(getattr(getattr(detector, "detector", None), "tta", False)),
               "timings_s": {k: round(v, 6) for k, v in timings.items()},
               "tracks": stats.summary(class_names),
               "files": ["tracks.csv", "detections.csv", "summary.json"]
               + (["tracks.mp4"] if video and n else [])}
    write_json(out_dir / "summary.json", summary)
    return summary


def _limited(it, limit, timings):
    """Frames from ``it`` (at most ``limit``), timing the reads."""
    k = 0
    while limit is None or k < limit:
        t0 = time.perf_counter()
        item = next(it, None)
        timings["read"] += time.perf_counter() - t0
        if item is None:
            return
        k += 1
        yield item


def _inside(xyxy: np.ndarray, w: int, h: int, margin: float) -> np.ndarray:
    """Boxes whose bottom centre is the object's foot: clear of the left, right and bottom
    frame edges, and with the middle of the bottom edge not behind a nearer box.  A box cut by
    a frame edge, or whose foot is hidden by an object in front (on a ground plane seen from
    above, the nearer object is the one whose box reaches lower in the image), has its bottom
    centre above the foot, so it gives speed no position.  A nearer box that covers only a
    side of the bottom edge leaves the foot visible (until session 7 any overlap counted:
    validation speed error 11.7 -> 11.1 %, with true boxes 5.1 -> 4.4 %, coverage 81 -> 84 %)."""
    ok = (xyxy[:, 0] > margin) & (xyxy[:, 2] < w - margin) & (xyxy[:, 3] < h - margin)
    if len(xyxy) > 1:
        b, c = xyxy[:, None, :], xyxy[None, :, :]     # (n, 1, 4) this box, (1, n, 4) others
        foot = (b[..., 0] + b[..., 2]) / 2                               # (n, 1) x of b's foot
        hidden = ((c[..., 3] > b[..., 3]) & (c[..., 1] <= b[..., 3])     # c spans b's bottom
                  & (c[..., 0] <= foot) & (c[..., 2] >= foot))           # and covers its foot
        ok &= ~hidden.any(axis=1)
    return ok


def _one_frame(i, t, frame, dets, tracker, calibration, speed, annotate, outputs, stats,
               timings, fps, edge_margin) -> None:
    for c, b, s in zip(dets.class_id, dets.xyxy, dets.confidence):
        outputs.dets.writerow([i, _fmt(t, 6), int(c), *(_fmt(v, 2) for v in b), _fmt(s, 4)])
    t0 = time.perf_counter()
    if getattr(tracker, "appearance", 0) or getattr(tracker, "colour_gate", None) is not None:
        dets.data["colour"] = box_colour(frame, dets.xyxy)                  # (k, C)
    tracks = tracker.update(dets, t)
    t1 = time.perf_counter()
    ground = calibration.to_ground(tracks.bottom_center) if calibration is not None else None
    inside = _inside(tracks.xyxy, frame.shape[1], frame.shape[0], edge_margin)
    recovered = tracks.data.get("recovered", np.zeros(len(tracks), bool))
    speeds = {}
    for k, tid in enumerate(tracks.tracker_id):
        if recovered[k]:                  # found again by distance: maybe another object
            speed.forget(int(tid))
        g = ground[k] if ground is not None else None
        est = speed.update(int(tid), t, g if inside[k] else None) if g is not None else None
        sp, sd = (est.speed, est.std) if est is not None else (None, None)
        speeds[int(tid)] = (sp, sd)
        gx, gy = (g if g is not None else (None, None))
        outputs.tracks.writerow([i, _fmt(t, 6), int(tid), int(tracks.class_id[k]),
                                 *(_fmt(v, 2) for v in tracks.xyxy[k]), _fmt(gx), _fmt(gy),
                                 _fmt(sp), _fmt(sd)])
        stats.add(int(tid), i, t, int(tracks.class_id[k]), g, sp)
    speed.prune(t)
    t2 = time.perf_counter()
    timings["track"] += t1 - t0
    timings["speed"] += t2 - t1
    if annotate is not None:
        img = annotate(frame, tracks, speeds)
        t3 = time.perf_counter()
        outputs.frame(img, fps)
        timings["annotate"] += t3 - t2
        timings["write"] += time.perf_counter() - t3


def _print_summary(summary: dict, out_dir: Path, unit: str) -> None:
    k = UNITS[unit]
    t = summary["timings_s"]
    busy = sum(v for key, v in t.items() if not key.startswith("detector_")) or 1.0
    split = ", ".join(f"{key} {100 * v / busy:.0f}%" for key, v in t.items()
                      if not key.startswith("detector_"))
    print(f"{summary['frames']} frames at {summary['fps'] or 0:.1f} fps ({split}); "
          f"{len(summary['tracks'])} tracks; outputs in {out_dir}")
    if not summary["tracks"]:
        return
    print(f"{'id':>5} {'class':>10} {'first s':>8} {'last s':>8} {'frames':>6} "
          f"{'mean ' + unit:>10} {'max ' + unit:>10}")
    for r in summary["tracks"]:
        sp = [("-" if r[f] is None else f"{r[f] * k:.1f}") for f in ("mean_speed", "max_speed")]
        print(f"{r['id']:>5} {str(r.get('class_name', r['class'])):>10} {r['first_time']:>8.2f} "
              f"{r['last_time']:>8.2f} {r['frames']:>6} {sp[0]:>10} {sp[1]:>10}")


def build_detector(kind: str, model, threads: int, threshold: float, video=None,
                   timestamps=None, prime: int = 30, tta: bool = False):
    """The ``model`` (a model-file ``Detector`` wrapped in :class:`ModelFrames`; ``tta``: with
    the mirrored second pass) or ``mog2`` (``BackgroundSubtractorDetector``, primed with the
    per-pixel median of the first ``prime`` frames of ``video`` so objects present at the
    start leave no ghosts) detector; ValueError / OSError for a bad choice or file."""
    if tta and kind != "model":
        raise ValueError(f"--tta: only a model detector has a mirrored pass, not {kind!r}")
    if kind == "mog2":
        from lowbit.detect.autolabel import BackgroundSubtractorDetector

        det = BackgroundSubtractorDetector()
        if video is not None and prime > 0:
            from lowbit.data.video import open_video

            with open_video(video, timestamps=timestamps) as src:
                head = [f for (_, _, f), _ in zip(src, range(prime))]
            if head:
                det.prime(np.median(np.stack(head[::max(1, len(head) // 25)]), axis=0)
                          .astype(np.uint8))
        return det
    if kind != "model":
        raise ValueError(f"--detector: expected 'model' or 'mog2', got {kind!r}")
    if not model:
        raise ValueError("a detector model file is needed (or --detector mog2)")
    if not Path(model).is_file():
        raise ValueError(f"{model}: file not found")
    from lowbit.detect.detector import Detector

    return ModelFrames(Detector(model, threads=threads, threshold=threshold, tta=tta))


def check_common(threads: int, threshold: float, max_speed: float, unit: str,
                 track_thresh: float = 0.5) -> str | None:
    """The first bad argument shared by ``track`` and ``detect eval``, as a message."""
    if threads < 1:
        return f"--threads: expected >= 1, got {threads}"
    if not 0 <= threshold <= 1:
        return f"--threshold: expected 0..1, got {threshold}"
    if not max_speed > 0:
        return f"--max-speed: expected > 0 m/s, got {max_speed}"
    if unit not in UNITS:
        return f"--unit: expected one of {', '.join(UNITS)}, got {unit!r}"
    if not 0 < track_thresh <= 1:
        return f"--track-thresh: expected 0..1, got {track_thresh}"
    return None


def track_command(video, model=None, out="runs/track", calib=None, threads: int = 1,
                  threshold: float = 0.1, max_speed: float = 60.0, detector: str = "model",
                  unit: str = "km/h", timestamps="auto", limit: int | None = None,
                  no_video: bool = False, batch: int = 8, track_thresh: float = 0.5,
                  progress: bool | None = None, colour: bool = True,
                  tta: bool = False) -> int:
    """``lowbit track VIDEO [MODEL]``: detect, track and measure speeds; 0, or 2 after one
    ``lowbit track: error: ...`` line for a user error."""
    from lowbit.data.idx import DataError

    bad = check_common(threads, threshold, max_speed, unit, track_thresh)
    if bad is None and limit is not None and limit < 1:
        bad = f"--limit: expected >= 1, got {limit}"
    if bad is None and batch < 1:
        bad = f"--batch: expected >= 1, got {batch}"
    if bad:
        return fail("track", bad)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        cal = Calibration.from_file(calib) if calib else None
        det = build_detector(detector, model, threads, threshold, video, timestamps,
                             tta=tta)
        summary = track_video(video, det, out, cal, timestamps=timestamps,
                              speed=SpeedEstimator(max_speed=max_speed), unit=unit,
                              video=not no_video, batch=batch, limit=limit,
                              track_thresh=track_thresh, colour=colour, progress=progress)
    except (CalibrationError, DataError, ValueError, OSError) as e:
        return fail("track", str(e) or type(e).__name__)
    _print_summary(summary, out, unit)
    return 0
