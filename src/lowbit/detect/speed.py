"""Ground speed per track from its ground positions over the video's real timestamps.

For each track the most recent ground positions (X, Y) are fitted with a straight line in
time by least squares, separately for X and Y:

    X(t) = a + vx (t - tbar),  vx = sum((t - tbar)(X - Xbar)) / Sxx,  Sxx = sum((t - tbar)^2)

The slope's standard error comes from the fit residuals: ``se(vx)^2 = RSS_x / (n - 2) / Sxx``.
Speed is ``|v|``, its standard error by the delta method
``se(|v|)^2 = (vx^2 se(vx)^2 + vy^2 se(vy)^2) / |v|^2``.

**Window, chosen by the fit's own error.**  The fit first uses the last ``window`` seconds;
while its speed error is above ``precision * speed + 0.05 m/s`` the window grows by 1.5x, up
to ``max_window`` seconds.  A near object (small ground noise) or an accelerating one (a
longer line fits worse, so its error grows) keeps a short window and lags little; a far one,
where a pixel of box jitter is metres on the ground, gets a long window: the slope's error
falls as ``window^-1.5`` for a constant velocity.  ``max_window == window`` is the plain
fixed window.  A speed above ``max_speed`` is
clamped (the velocity vector scaled down to it), then velocity and variance are smoothed with
an exponential moving average of time constant ``smoothing`` seconds (the weight of a new fit
is ``1 - exp(-dt / smoothing)``, so irregular frame times are handled).  Nothing is reported
before the window holds ``min_points`` positions spanning ``min_span`` seconds.

**Gaps.**  With ``max_gap`` (default None: off) a position that comes more than ``max_gap``
seconds after the track's previous one starts the track's history afresh.  Off by default:
positions are also withheld while a box is partly hidden, so gaps are common and each restart
costs an estimate for ``min_span``; the pipeline instead calls :meth:`forget` when the tracker
reports a track it recovered by distance (``data["recovered"]``), where the object may have
changed.

For an accelerating object the window's slope is the velocity at the window's middle, so the
estimate lags by about ``w / 2 + smoothing`` seconds for the window ``w`` used.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["SpeedEstimate", "SpeedEstimator", "fit_velocity"]


@dataclass(frozen=True)
class SpeedEstimate:
    """One track's speed at one time: ``speed`` and its standard error ``std`` (m/s, or the
    unit of the positions per second), the smoothed ``velocity`` (vx, vy), this window's own
    unsmoothed fit ``raw_speed``, whether it was ``clamped``, and the window's ``points`` and
    time ``span`` (s)."""

    speed: float
    std: float
    velocity: tuple[float, float]
    raw_speed: float
    clamped: bool
    points: int
    span: float


def fit_velocity(t, xy) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares velocity of positions ``xy`` (n, 2) at times ``t`` (n,), n >= 3 with
    distinct times: (velocity (2,), variance of each component (2,)) from the residuals."""
    t = np.asarray(t, np.float64)
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    n = len(t)
    if n < 3:
        raise ValueError(f"a velocity fit with an error needs >= 3 points, got {n}")
    tc = t - t.mean()
    sxx = float(tc @ tc)
    if sxx <= 0:
        raise ValueError("a velocity fit needs points at different times")
    dc = xy - xy.mean(axis=0)
    v = tc @ dc / sxx
    resid = dc - np.outer(tc, v)
    var = (resid ** 2).sum(axis=0) / (n - 2) / sxx
    return v, var


def _speed_std(v: np.ndarray, var: np.ndarray) -> float:
    s2 = float(v @ v)
    if s2 < 1e-18:
        return math.sqrt(float(var.mean()))
    return math.sqrt(float((v ** 2) @ var) / s2)


class _History:
    __slots__ = ("t", "xy", "v", "var", "t_est", "last")

    def __init__(self):
        self.t: deque = deque()
        self.xy: deque = deque()
        self.v: np.ndarray | None = None       # smoothed velocity
        self.var: np.ndarray | None = None     # smoothed variance of its components
        self.t_est = -math.inf
        self.last: SpeedEstimate | None = None


GROWTH = 1.5          # the window grows by this factor while the fit is too uncertain
ABS_PRECISION = 0.05  # m/s (ground units / s): added to precision * speed


class SpeedEstimator:
    """Per-track sliding-window speed (see the module docstring).

    ``window`` (s): the shortest history a fit uses; ``max_window`` (s): the longest, and how
    long a track's history (and its last estimate, while no position comes) is kept;
    ``precision``: the relative speed error at which a window is long enough;
    ``min_points`` / ``min_span`` (s): the history needed before any estimate; ``max_speed``:
    the clamp, in ground units per second (60 m/s = 216 km/h by default); ``smoothing`` (s):
    the moving average's time constant, 0 for none; ``max_gap`` (s): the longest gap between
    a track's positions that keeps its history (None: any)."""

    def __init__(self, window: float = 0.5, min_points: int = 5, min_span: float = 0.4,
                 max_speed: float = 60.0, smoothing: float = 0.3,
                 max_window: float | None = 3.0, precision: float = 0.03,
                 max_gap: float | None = None):
        if not window > 0:
            raise ValueError(f"window must be > 0 s, got {window}")
        max_window = window if max_window is None else max_window
        if not max_window >= window:
            raise ValueError(f"need max_window >= window, got {max_window}, {window}")
        if not precision > 0:
            raise ValueError(f"precision must be > 0, got {precision}")
        if min_points < 3:
            raise ValueError(f"min_points must be >= 3 (a fit with an error), got {min_points}")
        if not 0 <= min_span <= window:
            raise ValueError(f"need 0 <= min_span <= window, got {min_span}, {window}")
        if not max_speed > 0:
            raise ValueError(f"max_speed must be > 0, got {max_speed}")
        if not smoothing >= 0:
            raise ValueError(f"smoothing must be >= 0 s, got {smoothing}")
        if max_gap is not None and not max_gap > 0:
            raise ValueError(f"max_gap must be > 0 s or None, got {max_gap}")
        self.window, self.min_points, self.min_span = float(window), int(min_points), min_span
        self.max_window, self.precision = float(max_window), float(precision)
        self.max_speed, self.smoothing = float(max_speed), float(smoothing)
        self.max_gap = math.inf if max_gap is None else float(max_gap)
        self.windows = [self.window]        # window, 1.5 window, ... up to max_window
        while self.windows[-1] < self.max_window:
            self.windows.append(min(self.windows[-1] * GROWTH, self.max_window))
        self._tracks: dict[int, _History] = {}

    def update(self, track_id: int, t: float, ground_xy=None) -> SpeedEstimate | None:
        """Add track ``track_id``'s ground position at time ``t`` (s) and return its estimate,
        or None while the history is too short.  ``ground_xy`` None or non-finite adds no
        point (the position is unreliable): the last estimate is returned while it is at
        most ``max_window`` seconds old."""
        h = self._tracks.setdefault(int(track_id), _History())
        t = float(t)
        xy = None if ground_xy is None else np.asarray(ground_xy, np.float64).reshape(2)
        if xy is None or not np.isfinite(xy).all() or (h.t and t <= h.t[-1]):
            return h.last if h.last is not None and t - h.t_est <= self.max_window else None
        if h.t and t - h.t[-1] > self.max_gap:              # a gap: start afresh
            h = self._tracks[int(track_id)] = _History()
        h.t.append(t)
        h.xy.append(xy)
        while h.t[0] < t - self.max_window:
            h.t.popleft()
            h.xy.popleft()
        times = np.fromiter(h.t, np.float64, len(h.t))
        fit = self._fit(times, h.xy, t)
        h.last = None if fit is None else self._estimate(h, t, *fit)
        return h.last

    def _fit(self, times: np.ndarray, xy, t: float):
        """(velocity, variance, points, span) of the shortest window whose speed error is
        within ``precision`` (else of the longest with enough history); None while even the
        longest has too little."""
        best = None
        for w in self.windows:
            k = int(np.searchsorted(times, t - w))            # times[k:] lie in the window
            n, span = len(times) - k, times[-1] - times[k] if k < len(times) else 0.0
            if n < self.min_points or span < self.min_span:
                continue
            v, var = fit_velocity(times[k:], np.stack(list(xy)[k:]))
            best = (v, var, n, span)
            if _speed_std(v, var) <= self.precision * float(np.hypot(*v)) + ABS_PRECISION:
                break
        return best

    def _estimate(self, h: _History, t: float, v, var, points: int, span: float) -> SpeedEstimate:
        raw = float(np.hypot(*v))
        clamped = raw > self.max_speed
        if clamped:
            v = v * (self.max_speed / raw)
        dt = t - h.t_est
        if h.v is None or self.smoothing == 0 or dt > self.max_window:
            h.v, h.var = v, var          # first estimate, or after a gap: start afresh
        else:
            w = 1.0 - math.exp(-max(dt, 0.0) / self.smoothing)
            h.v = h.v + w * (v - h.v)
            h.var = h.var + w * (var - h.var)
        h.t_est = t
        speed = min(float(np.hypot(*h.v)), self.max_speed)
        return SpeedEstimate(speed, _speed_std(h.v, h.var), (float(h.v[0]), float(h.v[1])),
                             raw, clamped, int(points), float(span))

    def forget(self, track_id: int) -> None:
        """Drop a track's history (it ended, or its object may have changed)."""
        self._tracks.pop(int(track_id), None)

    def prune(self, t: float) -> None:
        """Drop every track not seen for more than ``max_window`` seconds before ``t``."""
        stale = [k for k, h in self._tracks.items() if not h.t or h.t[-1] < t - self.max_window]
        for k in stale:
            del self._tracks[k]
