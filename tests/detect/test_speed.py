"""Speed: sliding-window least squares over real timestamps, its standard error, history
needed before any estimate, the clamp, and the lag on an accelerating track."""
import numpy as np
import pytest

pytest.importorskip("cv2")

from lowbit.detect.calibration import Calibration
from lowbit.detect.speed import SpeedEstimator, fit_velocity

H = np.array([[0.05, 0.01, -10.0], [0.002, 0.12, -20.0], [0.0001, 0.002, 1.0]])


def _times(n, fps=30.0, jitter=0.004, drop=0.2, seed=0):
    """Real frame times: nominal 1/fps steps with jitter, some frames dropped."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps + rng.uniform(-jitter, jitter, n)
    return t[rng.random(n) >= drop]


def _observe(ground, cal, noise_px, seed=1):
    """Ground positions -> pixels (+ noise) -> ground again, as the pipeline sees them."""
    pix = cal.to_image(ground)
    pix = pix + np.random.default_rng(seed).normal(0, noise_px, pix.shape)
    return cal.to_ground(pix)


def test_fit_velocity_matches_scipy_linregress():
    from scipy.stats import linregress
    rng = np.random.default_rng(3)
    t = np.sort(rng.uniform(0, 1, 20))
    xy = np.c_[3 + 7 * t, 1 - 2 * t] + rng.normal(0, 0.1, (20, 2))
    v, var = fit_velocity(t, xy)
    for k in range(2):
        fit = linregress(t, xy[:, k])
        assert v[k] == pytest.approx(fit.slope) and np.sqrt(var[k]) == pytest.approx(fit.stderr)


def test_constant_velocity_with_jittered_times_and_pixel_noise():
    """A road 10 m wide and 50 m long seen in perspective in a 640x480 frame; an object at
    13 m/s along it, 0.7 px of noise on its image position."""
    cal = Calibration.from_points([[100, 460], [540, 460], [400, 200], [240, 200]],
                                  [[0, 0], [10, 0], [10, 50], [0, 50]])
    t = _times(110)
    truth_v = np.array([1.0, np.sqrt(13 ** 2 - 1)])
    ground = np.array([3.0, 2.0]) + np.outer(t, truth_v)
    assert (cal.to_image(ground)[:, 1] > 199).all()            # stays on the road
    seen = _observe(ground, cal, noise_px=0.7)
    est = SpeedEstimator(window=1.0, max_speed=60)
    out = [(ti, est.update(7, ti, g)) for ti, g in zip(t, seen)]
    late = [e for ti, e in out if ti > 1.2]
    speeds = np.array([e.speed for e in late])
    stds = np.array([e.std for e in late])
    assert np.abs(speeds - 13).max() < 0.05 * 13
    assert np.abs(speeds - 13).mean() < 0.02 * 13
    assert 0 < stds.mean() < 1.0                                # an honest, non-zero error
    assert np.mean(np.abs(speeds - 13) < 3 * stds) > 0.8
    assert np.array(late[-1].velocity) == pytest.approx(truth_v, abs=0.6)
    nominal = SpeedEstimator(window=1.0)                         # frame index / 30 instead
    bad = [nominal.update(7, i / 30, g) for i, g in enumerate(seen)][-1]
    assert abs(bad.speed - 13) > 1.5                             # why real times are needed


def test_no_estimate_before_enough_history():
    est = SpeedEstimator(window=1.0, min_points=5, min_span=0.4)
    res = [est.update(1, i / 30, (i / 3, 0.0)) for i in range(20)]
    first = next(i for i, r in enumerate(res) if r is not None)
    assert first == 12                                           # t = 0.4 s, 13 points
    assert res[first].speed == pytest.approx(10.0) and res[first].std == pytest.approx(0, abs=1e-9)
    est = SpeedEstimator(window=1.0, min_points=8, min_span=0.05)
    res = [est.update(1, i / 10, (i, 0.0)) for i in range(10)]
    assert [r is None for r in res] == [True] * 7 + [False] * 3  # min_points counts too
    assert est.update(2, 0.0, (np.nan, 0.0)) is None             # tracks are independent


def test_clamp():
    est = SpeedEstimator(max_speed=30.0, smoothing=0)
    res = [est.update(1, i / 30, (100 * i / 30, 0.0)) for i in range(30)][-1]
    assert res.clamped and res.speed == pytest.approx(30.0) and res.raw_speed == pytest.approx(100)
    assert res.velocity == pytest.approx((30.0, 0.0))
    ok = SpeedEstimator(max_speed=30.0).update
    assert not [ok(1, i / 30, (10 * i / 30, 0)) for i in range(30)][-1].clamped


def test_accelerating_track_lags_by_half_window_plus_smoothing():
    window, tau, a, v0 = 1.0, 0.3, 3.0, 5.0
    est = SpeedEstimator(window=window, smoothing=tau, max_window=window)
    t = _times(180, drop=0.0)
    for ti in t:
        r = est.update(1, ti, (v0 * ti + a * ti ** 2 / 2, 0.0))
        if ti > 2.5:
            true_now = v0 + a * ti
            lagged = v0 + a * (ti - window / 2 - tau)
            assert lagged - 0.2 < r.speed < true_now
            assert r.speed == pytest.approx(lagged, abs=0.35)


def test_gap_restarts_smoothing_and_prune():
    est = SpeedEstimator(window=0.5, min_span=0.2, smoothing=1.0, max_window=0.5)
    for i in range(15):
        est.update(1, i / 30, (2 * i / 30, 0))
    after = [est.update(1, 3 + i / 30, (20 + 8 * i / 30, 0)) for i in range(15)][-1]
    assert after.speed == pytest.approx(8.0, abs=1e-6)          # not blended with 2 m/s
    est.prune(10.0)
    assert est.update(1, 10.0, (0, 0)) is None


def test_a_gap_longer_than_max_gap_restarts_the_history():
    """2 m/s along x for 1 s, 0.5 s without positions (the track may have changed object),
    then 6 m/s along y: the history before the gap must not bend the new fit."""
    def run(est):
        for i in range(30):
            est.update(1, i / 30, (2 * i / 30, 0.0))
        res = [est.update(1, 1.5 + i / 30, (3.0, 6 * i / 30)) for i in range(30)]
        return res
    fresh = run(SpeedEstimator(max_gap=0.3))
    assert fresh[0] is None                                      # history needed again
    assert fresh[-1].speed == pytest.approx(6.0, abs=1e-6)
    assert fresh[-1].velocity == pytest.approx((0.0, 6.0), abs=1e-6)
    mixed = run(SpeedEstimator(max_gap=None))
    assert mixed[0] is not None and abs(mixed[-1].speed - 6.0) > 0.3
    kept = run(SpeedEstimator(max_gap=0.6))                      # a 0.53 s gap is kept
    assert kept[0] is not None


def test_arguments_checked():
    for kw in [dict(window=0), dict(min_points=2), dict(min_span=2.0), dict(max_speed=0),
               dict(smoothing=-1), dict(window=1.0, max_window=0.5), dict(precision=0),
               dict(max_gap=0), dict(max_gap=-1.0)]:
        with pytest.raises(ValueError):
            SpeedEstimator(**kw)
    with pytest.raises(ValueError):
        fit_velocity([0, 0, 0], np.zeros((3, 2)))


def test_a_missing_position_keeps_the_last_estimate_for_one_window():
    est = SpeedEstimator(window=0.5, min_span=0.2, max_window=0.5)
    last = [est.update(1, i / 30, (3 * i / 30, 0)) for i in range(15)][-1]
    assert last.speed == pytest.approx(3.0)
    assert est.update(1, 15 / 30, None) is last                   # e.g. a box cut by the edge
    assert est.update(1, 16 / 30, (np.inf, 0)) is last
    assert est.update(1, 14 / 30 + 0.6, None) is None             # too old


def test_window_grows_for_a_noisy_far_track_and_stays_short_when_accelerating():
    """Far object: 0.4 m of ground noise at 2 m/s -> the error of a 0.5 s fit is far above
    3 %, so the window grows and the estimate is much closer than the fixed short window's.
    Accelerating, noise-free object: the 0.5 s fit is already precise, so it keeps the short
    window and lags about 0.25 + smoothing s instead of the 1 s window's 0.5 + smoothing."""
    rng = np.random.default_rng(5)
    t = _times(240, drop=0.0)
    ground = np.c_[2.0 * t, np.full_like(t, 20.0)] + rng.normal(0, 0.4, (len(t), 2))
    adaptive, fixed = SpeedEstimator(), SpeedEstimator(max_window=0.5)
    a = [adaptive.update(1, ti, g) for ti, g in zip(t, ground)]
    f = [fixed.update(1, ti, g) for ti, g in zip(t, ground)]
    late = [(x, y) for ti, x, y in zip(t, a, f) if ti > 4.0]
    err_a = np.mean([abs(x.speed - 2.0) for x, _ in late])
    err_f = np.mean([abs(y.speed - 2.0) for _, y in late])
    assert err_a < 0.1 * 2.0 and err_a < err_f / 3
    assert min(x.span for x, _ in late) > 1.5 and max(y.span for _, y in late) <= 0.5

    acc, v0, tau = 3.0, 5.0, 0.3
    est = SpeedEstimator(smoothing=tau)
    for ti in t:
        r = est.update(1, ti, (v0 * ti + acc * ti ** 2 / 2, 0.0))
        if ti > 2.5:
            assert r.span <= 0.5
            assert r.speed == pytest.approx(v0 + acc * (ti - 0.25 - tau), abs=0.2)
