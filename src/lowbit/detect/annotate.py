"""The pipeline's outputs: tracks drawn on frames with OpenCV (a box and a label per track --
id, class, speed with its standard error -- and a trail of its recent bottom-centre points),
the CSV files and the annotated video written under temporary names (:class:`Outputs`), and
the per-track totals of ``summary.json`` (:class:`TrackStats`)."""
from __future__ import annotations

import colorsys
import csv
import json
import os
import tempfile
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

from lowbit.detect.detections import Detections

__all__ = ["Annotator", "track_color", "speed_label", "UNITS", "Outputs", "TrackStats",
           "write_json", "TRACK_COLUMNS", "DET_COLUMNS"]

TRACK_COLUMNS = ["frame", "time", "id", "class", "x1", "y1", "x2", "y2", "ground_x",
                 "ground_y", "speed", "speed_std"]
DET_COLUMNS = ["frame", "time", "class", "x1", "y1", "x2", "y2", "confidence"]

UNITS = {"km/h": 3.6, "m/s": 1.0, "mph": 3.6 / 1.609344}


def track_color(track_id: int) -> tuple[int, int, int]:
    """A bright RGB colour per id, neighbours far apart on the hue circle."""
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def speed_label(speed: float | None, std: float | None, unit: str = "km/h") -> str:
    """``"54 km/h +-2.1"`` from m/s (one decimal under 10), or ``""`` without a speed."""
    if speed is None or not np.isfinite(speed):
        return ""

    def num(v: float) -> str:
        return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"

    k = UNITS[unit]
    s = f"{num(speed * k)} {unit}"
    if std is not None and np.isfinite(std):
        s += f" +-{num(std * k)}"
    return s


class Annotator:
    """``annotator(frame, tracks, speeds)`` -> a copy of the RGB ``frame`` with every track in
    ``tracks`` (Detections with ``tracker_id``) drawn; ``speeds`` maps track id to (speed,
    std) in m/s.  Trails keep the last ``trail`` bottom-centre points of each track."""

    def __init__(self, unit: str = "km/h", trail: int = 30, class_names=None,
                 thickness: int = 2):
        if unit not in UNITS:
            raise ValueError(f"unit: expected one of {sorted(UNITS)}, got {unit!r}")
        self.unit, self.trail, self.thickness = unit, int(trail), int(thickness)
        self.class_names = list(class_names) if class_names is not None else None
        self._trails: dict[int, deque] = {}

    def _name(self, class_id: int) -> str:
        if self.class_names is not None and 0 <= class_id < len(self.class_names):
            return str(self.class_names[class_id])
        return str(class_id)

    def label(self, track_id: int, class_id: int, speed=None, std=None) -> str:
        text = f"#{track_id} {self._name(class_id)}"
        s = speed_label(speed, std, self.unit)
        return f"{text} {s}" if s else text

    def __call__(self, frame: np.ndarray, tracks: Detections, speeds=None) -> np.ndarray:
        import cv2

        img = np.ascontiguousarray(frame.copy() if frame.ndim == 3 else
                                   cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB))
        speeds = speeds or {}
        ids = tracks.tracker_id if tracks.tracker_id is not None else np.zeros(0, np.int64)
        for tid, p in zip(ids, tracks.bottom_center):
            self._trails.setdefault(int(tid), deque(maxlen=self.trail)).append(p)
        live = set(int(i) for i in ids)
        for tid in [k for k in self._trails if k not in live]:
            self._trails[tid].popleft()                 # unseen tracks' trails fade out
            if not self._trails[tid]:
                del self._trails[tid]
        for tid, pts in self._trails.items():
            if len(pts) > 1:
                poly = np.round(np.array(pts)).astype(np.int32).reshape(-1, 1, 2)
                cv2.polylines(img, [poly], False, track_color(tid), 1, cv2.LINE_AA)
        for box, tid, cls in zip(tracks.xyxy, ids, tracks.class_id):
            self._draw_box(img, box, int(tid), self.label(int(tid), int(cls),
                                                          *speeds.get(int(tid), (None, None))))
        return img

    def _draw_box(self, img: np.ndarray, box, tid: int, text: str) -> None:
        import cv2

        color = track_color(tid)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), color, self.thickness, cv2.LINE_AA)
        scale = max(0.35, min(img.shape[0], img.shape[1]) / 900)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 - 3 if y1 - th - base - 3 >= 0 else y2 + th + 3
        tx = min(max(x1, 0), max(img.shape[1] - tw, 0))
        cv2.rectangle(img, (tx, ty - th - 2), (tx + tw, ty + base - 1), color, -1)
        cv2.putText(img, text, (tx, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)


class Outputs:
    """The CSV files and the video, under temporary names until :meth:`close`."""

    def __init__(self, out_dir: Path, video: bool):
        self.out_dir, self._tmp = out_dir, {}
        self.tracks = self._csv("tracks.csv", TRACK_COLUMNS)
        self.dets = self._csv("detections.csv", DET_COLUMNS)
        self.video_path = out_dir / "tracks.mp4" if video else None
        self.writer = None

    def _csv(self, name: str, columns: list[str]):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=self.out_dir)
        f = os.fdopen(fd, "w", newline="")
        self._tmp[name] = (f, Path(tmp))
        w = csv.writer(f)
        w.writerow(columns)
        return w

    def frame(self, frame: np.ndarray, fps: float) -> None:
        if self.video_path is None:
            return
        if self.writer is None:
            from lowbit.data.video import VideoWriter

            self.writer = VideoWriter(self.video_path, fps, (frame.shape[1], frame.shape[0]))
        self.writer.write(frame)

    def close(self, ok: bool) -> None:
        for name, (f, tmp) in self._tmp.items():
            f.close()
            os.replace(tmp, self.out_dir / name) if ok else tmp.unlink(missing_ok=True)
        if self.writer is not None:
            self.writer.close() if ok else self.writer.abort()


class TrackStats:
    """Per-track totals for summary.json."""

    def __init__(self):
        self.rows: dict[int, dict] = {}

    def add(self, tid: int, frame: int, t: float, cls: int, ground, speed) -> None:
        r = self.rows.setdefault(tid, {"first_frame": frame, "first_time": t, "frames": 0,
                                       "classes": defaultdict(int), "length_m": 0.0,
                                       "speeds": [], "_last": None})
        r.update(last_frame=frame, last_time=t)
        r["frames"] += 1
        r["classes"][cls] += 1
        if ground is not None and np.isfinite(ground).all():
            if r["_last"] is not None:
                r["length_m"] += float(np.hypot(*(ground - r["_last"])))
            r["_last"] = ground
        if speed is not None:
            r["speeds"].append(speed)

    def summary(self, class_names) -> list[dict]:
        out = []
        for tid, r in sorted(self.rows.items()):
            cls = max(r["classes"], key=r["classes"].get)
            sp = np.array(r["speeds"], np.float64)
            item = {"id": tid, "class": cls, "first_frame": r["first_frame"],
                    "last_frame": r["last_frame"], "first_time": r["first_time"],
                    "last_time": r["last_time"], "duration_s": r["last_time"] - r["first_time"],
                    "frames": r["frames"],
                    "length_m": r["length_m"] if r["_last"] is not None else None,
                    "mean_speed": float(sp.mean()) if len(sp) else None,
                    "max_speed": float(sp.max()) if len(sp) else None}
            if class_names is not None and 0 <= cls < len(class_names):
                item["class_name"] = str(class_names[cls])
            out.append(item)
        return out


def write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
