"""Image pixels <-> ground-plane metres: a planar homography (or a plain metres-per-pixel
scale) read from a calibration JSON file.

The file holds one of::

    {"homography": [[h11, h12, h13], [h21, h22, h23], [h31, h32, h33]]}   # image -> ground
    {"image_points": [[u, v], ...], "ground_points": [[X, Y], ...]}        # >= 4 pairs
    {"metres_per_pixel": s}                                                # X = s u, Y = s v

(``homography`` wins when both it and the point pairs are given).  Points are fitted with
OpenCV's ``cv2.findHomography`` (least squares over all pairs).  Every problem -- a missing
field, fewer than 4 pairs, a non-finite number, a singular homography -- is a
:class:`CalibrationError` naming the file and the field.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["Calibration", "CalibrationError"]


class CalibrationError(ValueError):
    """A calibration that cannot be used; the message names the file and the field."""


def _where(source: str | None, field: str) -> str:
    return f"{source}: {field}" if source else field


def _array(value, shape_tail: tuple, field: str, source: str | None) -> np.ndarray:
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{_where(source, field)}: expected numbers, "
                               f"got {value!r:.80}") from None
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        want = "x".join(["k", *map(str, shape_tail)])
        raise CalibrationError(f"{_where(source, field)}: expected a {want} array, "
                               f"got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise CalibrationError(f"{_where(source, field)}: contains a non-finite number")
    return arr


class Calibration:
    """A homography ``H`` mapping image pixels (u, v) to ground metres (X, Y)."""

    def __init__(self, homography, source: str | None = None, field: str = "homography"):
        try:
            h = np.array(homography, np.float64)
        except (TypeError, ValueError):
            raise CalibrationError(f"{_where(source, field)}: expected a 3x3 matrix of "
                                   f"numbers, got {homography!r:.80}") from None
        if h.shape != (3, 3):
            raise CalibrationError(f"{_where(source, field)}: expected a 3x3 matrix, "
                                   f"got shape {h.shape}")
        if not np.isfinite(h).all():
            raise CalibrationError(f"{_where(source, field)}: contains a non-finite number")
        sv = np.linalg.svd(h, compute_uv=False)
        if sv[0] == 0 or sv[-1] / sv[0] < 1e-12:
            raise CalibrationError(f"{_where(source, field)}: the homography is singular "
                                   f"(degenerate points or matrix)")
        self.homography = h / (h[2, 2] if abs(h[2, 2]) > 1e-12 else sv[0])
        self.inverse = np.linalg.inv(self.homography)
        self.source = source
        self.point_rms: float | None = None     # ground metres, when fitted from points

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_scale(cls, metres_per_pixel: float, source: str | None = None) -> "Calibration":
        s = metres_per_pixel
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not np.isfinite(s) \
                or s <= 0:
            raise CalibrationError(f"{_where(source, 'metres_per_pixel')}: expected a "
                                   f"positive number, got {s!r}")
        return cls(np.diag([float(s), float(s), 1.0]), source, "metres_per_pixel")

    @classmethod
    def from_points(cls, image_points, ground_points, source: str | None = None
                    ) -> "Calibration":
        img = _array(image_points, (2,), "image_points", source)
        gnd = _array(ground_points, (2,), "ground_points", source)
        if len(img) != len(gnd):
            raise CalibrationError(f"{_where(source, 'image_points')}: {len(img)} points but "
                                   f"ground_points has {len(gnd)}")
        if len(img) < 4:
            raise CalibrationError(f"{_where(source, 'image_points')}: a homography needs at "
                                   f"least 4 point pairs, got {len(img)}")
        import cv2

        h, _ = cv2.findHomography(img, gnd, 0)
        try:
            if h is None:
                raise CalibrationError("no fit")
            cal = cls(h, source, "image_points")
        except CalibrationError:
            raise CalibrationError(f"{_where(source, 'image_points')}: no homography fits "
                                   f"these points (are 3 of them on one line?)") from None
        cal.point_rms = float(np.sqrt(np.mean(np.sum((cal.to_ground(img) - gnd) ** 2, 1))))
        return cal

    @classmethod
    def from_dict(cls, spec: dict, source: str | None = None) -> "Calibration":
        if not isinstance(spec, dict):
            raise CalibrationError(f"{source or 'calibration'}: expected a JSON object")
        if "homography" in spec:
            return cls(spec["homography"], source)
        if "image_points" in spec or "ground_points" in spec:
            for key in ("image_points", "ground_points"):
                if key not in spec:
                    raise CalibrationError(f"{_where(source, key)}: missing (needed with "
                                           f"the other point list)")
            return cls.from_points(spec["image_points"], spec["ground_points"], source)
        if "metres_per_pixel" in spec:
            return cls.from_scale(spec["metres_per_pixel"], source)
        raise CalibrationError(f"{source or 'calibration'}: needs 'homography', "
                               f"'image_points' + 'ground_points' or 'metres_per_pixel'")

    @classmethod
    def from_file(cls, path) -> "Calibration":
        path = Path(path)
        try:
            spec = json.loads(path.read_text())
        except OSError as e:
            raise CalibrationError(f"{path}: cannot read ({e.strerror or e})") from None
        except json.JSONDecodeError as e:
            raise CalibrationError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") \
                from None
        return cls.from_dict(spec, str(path))

    # -- mapping -----------------------------------------------------------------------
    @staticmethod
    def _apply(h: np.ndarray, points) -> np.ndarray:
        p = np.asarray(points, np.float64).reshape(-1, 2)
        q = p @ h[:, :2].T + h[:, 2]
        w = q[:, 2:]
        ok = np.abs(w) > 1e-12
        return np.where(ok, q[:, :2] / np.where(ok, w, 1.0), np.nan)

    def to_ground(self, points) -> np.ndarray:
        """(k, 2) pixels -> (k, 2) ground metres (NaN for points on the horizon line)."""
        return self._apply(self.homography, points)

    def to_image(self, points) -> np.ndarray:
        """(k, 2) ground metres -> (k, 2) pixels."""
        return self._apply(self.inverse, points)

    def to_dict(self) -> dict:
        return {"homography": self.homography.tolist()}

    def __repr__(self) -> str:
        return f"Calibration(source={self.source!r}, homography={self.homography.tolist()})"
