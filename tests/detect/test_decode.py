"""lowbit.detect.decode on hand-made maps (numpy only, no torch): peaks, boxes, clipping,
threshold, topk; the model-file Detector refuses files that are not detectors."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lowbit.detect.decode import decode, peaks, sigmoid

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LOW = -8.0                                    # background logit: score 3e-4


def maps(k=1, h=6, w=8, n=1):
    """Background heatmap logits, unit sizes (log 0 = one cell) and centred offsets."""
    return (np.full((n, k, h, w), LOW, np.float32), np.zeros((n, 2, h, w), np.float32),
            np.full((n, 2, h, w), 0.5, np.float32))


def logit(p):
    return math.log(p / (1 - p))


def test_single_peak_gives_its_box():
    hm, size, off = maps()
    hm[0, 0, 2, 3] = logit(0.9)
    size[0, :, 2, 3] = np.log([2.0, 0.5])            # 16 x 4 pixels at stride 8
    off[0, :, 2, 3] = (0.25, 0.75)
    (d,) = decode(hm, size, off, stride=8)
    centre = ((3 + 0.25) * 8, (2 + 0.75) * 8)
    np.testing.assert_allclose(d.xyxy, [[centre[0] - 8, centre[1] - 2, centre[0] + 8,
                                         centre[1] + 2]], rtol=1e-6)
    np.testing.assert_allclose(d.confidence, [0.9], rtol=1e-6)
    assert d.class_id.tolist() == [0]
    assert d.xyxy.dtype == np.float32 and d.class_id.dtype == np.int64


def test_adjacent_peaks_keep_the_higher_one_distant_ones_both():
    hm, size, off = maps()
    hm[0, 0, 2, 3], hm[0, 0, 2, 4] = logit(0.8), logit(0.9)     # neighbours: only 0.9
    hm[0, 0, 2, 6] = logit(0.7)                                  # two cells away: kept
    hm[0, 0, 4, 5] = logit(0.6)                                  # diagonal neighbour of none
    (d,) = decode(hm, size, off, stride=4)
    np.testing.assert_allclose(d.confidence, [0.9, 0.7, 0.6], rtol=1e-6)
    centres = (d.xyxy[:, :2] + d.xyxy[:, 2:]) / 2
    np.testing.assert_allclose(centres, [[4.5 * 4, 2.5 * 4], [6.5 * 4, 2.5 * 4],
                                         [5.5 * 4, 4.5 * 4]])


def test_diagonal_neighbour_is_suppressed():
    hm, size, off = maps()
    hm[0, 0, 2, 2], hm[0, 0, 3, 3] = logit(0.8), logit(0.5)
    (d,) = decode(hm, size, off, stride=8)
    np.testing.assert_allclose(d.confidence, [0.8], rtol=1e-6)


def test_plateau_ties_are_all_peaks_in_class_y_x_order():
    """Equal neighbours are each the max of their window (CenterNet's max-pool rule)."""
    hm, size, off = maps(k=2)
    hm[0, 1, 1, 1] = hm[0, 1, 1, 2] = logit(0.6)
    hm[0, 0, 3, 5] = logit(0.6)
    (d,) = decode(hm, size, off, stride=8)
    assert d.class_id.tolist() == [0, 1, 1]
    np.testing.assert_allclose(d.xyxy[:, 0], [5 * 8, 1 * 8, 2 * 8])   # unit boxes: x1 = x * 8


def test_saturated_logits_do_not_tie():
    """sigmoid(30) == sigmoid(40) == 1.0 in floating point; the logits still differ."""
    hm, size, off = maps()
    hm[0, 0, 2, 2], hm[0, 0, 2, 3] = 30.0, 40.0
    (d,) = decode(hm, size, off, stride=8)
    assert len(d) == 1 and d.xyxy[0, 0] == 3 * 8


def test_classes_are_separate_maps():
    hm, size, off = maps(k=3)
    hm[0, 0, 2, 2], hm[0, 2, 2, 2] = logit(0.5), logit(0.7)
    (d,) = decode(hm, size, off, stride=8)
    assert d.class_id.tolist() == [2, 0]


def test_border_peaks_and_clipping_to_the_image():
    hm, size, off = maps(h=4, w=5)
    hm[0, 0, 0, 0], hm[0, 0, 3, 4] = logit(0.9), logit(0.8)
    size[0, :, 0, 0] = np.log(4.0)                   # 32 px box around (4, 4): clipped
    off[0, :, 3, 4] = (1.0, 1.0)                     # centre on the far corner
    size[0, :, 3, 4] = np.log(1.0)
    (d,) = decode(hm, size, off, stride=8)
    np.testing.assert_allclose(d.xyxy, [[0, 0, 20, 20], [36, 28, 40, 32]])


def test_offsets_are_clipped_and_image_size_overrides_the_grid():
    hm, size, off = maps(h=4, w=5)
    hm[0, 0, 1, 1] = logit(0.9)
    off[0, :, 1, 1] = (-1.5, 2.5)                  # clipped to [-1, 2]: centre (0, 24)
    (d,) = decode(hm, size, off, stride=8, image_size=(26, 30))   # (H, W)
    np.testing.assert_allclose(d.xyxy, [[0, 20, 4, 26]])          # x1 -4 -> 0, y2 28 -> 26
    off[0, :, 1, 1] = (-0.5, 1.5)                  # inside the range: kept (a neighbour cell)
    (d,) = decode(hm, size, off, stride=8, image_size=(26, 30))
    np.testing.assert_allclose(d.xyxy, [[0, 16, 8, 24]])


def test_huge_sizes_do_not_overflow():
    hm, size, off = maps()
    hm[0, 0, 2, 2] = 1.0
    size[0, :, 2, 2] = 1e4
    with np.errstate(all="raise"):
        (d,) = decode(hm, size, off, stride=8)
    np.testing.assert_allclose(d.xyxy, [[0, 0, 64, 48]])


def test_threshold_is_inclusive():
    hm, size, off = maps()
    hm[0, 0, 1, 1], hm[0, 0, 4, 5] = 0.0, -0.01        # scores 0.5 and just below
    assert len(decode(hm, size, off, 8, threshold=0.5)[0]) == 1
    assert len(decode(hm, size, off, 8, threshold=0.49)[0]) == 2
    assert len(decode(hm, size, off, 8, threshold=0.51)[0]) == 0


def test_topk_keeps_the_highest_scores_first():
    hm, size, off = maps(h=10, w=10)
    rng = np.random.default_rng(0)
    cells = [(y, x) for y in range(0, 10, 2) for x in range(0, 10, 2)]   # 25 isolated peaks
    scores = rng.permutation(np.linspace(0.35, 0.95, len(cells)))
    for (y, x), s in zip(cells, scores):
        hm[0, 0, y, x] = logit(s)
    (d,) = decode(hm, size, off, stride=8, topk=5)
    np.testing.assert_allclose(d.confidence, np.sort(scores)[::-1][:5], rtol=1e-6)
    assert len(decode(hm, size, off, stride=8, topk=100)[0]) == 25


def test_batch_and_empty_images():
    hm, size, off = maps(n=3)
    hm[1, 0, 2, 2] = 2.0
    dets = decode(hm, size, off, stride=8)
    assert [len(d) for d in dets] == [0, 1, 0]
    assert dets[0].xyxy.shape == (0, 4)


def test_peaks_match_a_brute_force_window_max():
    rng = np.random.default_rng(1)
    m = rng.integers(0, 4, (2, 3, 7, 9)).astype(np.float32)   # many ties
    ref = np.zeros(m.shape, bool)
    for idx in np.ndindex(m.shape):
        *lead, y, x = idx
        win = m[tuple(lead)][max(0, y - 1):y + 2, max(0, x - 1):x + 2]
        ref[idx] = m[idx] == win.max()
    np.testing.assert_array_equal(peaks(m), ref)


def test_sigmoid_is_stable():
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is fine
        s = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(s, [0.0, 0.5, 1.0])


def test_bad_shapes_are_refused():
    hm, size, off = maps()
    with pytest.raises(ValueError, match="size: expected shape"):
        decode(hm, size[:, :1], off, 8)
    with pytest.raises(ValueError, match="heatmap_logits"):
        decode(hm[0], size, off, 8)
    with pytest.raises(ValueError, match="grid"):
        decode(hm, size[..., :4], off[..., :4], 8)
    with pytest.raises(ValueError, match="topk"):
        decode(hm, size, off, 8, topk=0)


def test_detector_refuses_a_classifier_file():
    from lowbit.detect.detector import Detector
    with pytest.raises(ValueError, match="not a detector model file"):
        Detector(FIXTURES / "v1-bnn-lenet5.lbm")
