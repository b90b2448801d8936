"""Size and offset regression at the cells around each centre (``make_targets(neighbours=)``):
targets, their decoding back to the box, the weighted loss, and the training option."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lowbit.detect.decode import decode
from lowbit.train.detect_fit import fit_detector
from lowbit.train.detect_loss import decode_torch, detection_loss, make_targets


def one(box, neighbours, grid=(6, 8), cls=0):
    return make_targets([np.array([box], np.float32)], [np.array([cls])], 2, grid, 8,
                        neighbours=neighbours)


def test_neighbours_get_the_size_and_the_offset_from_their_own_cell():
    t = one([10, 10, 30, 26], 0.5)                 # centre (20, 18) px = (2.5, 2.25) cells
    w = t["weight"][0, 0]
    assert w[2, 2] == 1 and t["mask"][0, 0, 2, 2] == 1 and t["mask"].sum() == 1
    assert (w[1:4, 1:4] > 0).sum() == 9 and w.sum() == pytest.approx(1 + 8 * 0.5)
    for gy in range(1, 4):
        for gx in range(1, 4):
            np.testing.assert_allclose(t["offset"][0, :, gy, gx], [2.5 - gx, 2.25 - gy])
            np.testing.assert_allclose(t["size"][0, :, gy, gx], np.log([2.5, 2.0]), rtol=1e-6)
    assert t["heatmap"][0, 0, 2, 2] == 1                           # the heatmap is unchanged
    np.testing.assert_array_equal(t["heatmap"], one([10, 10, 30, 26], 0.0)["heatmap"])


def test_zero_keeps_the_centre_only_targets():
    t0 = one([10, 10, 30, 26], 0.0)
    np.testing.assert_array_equal(t0["weight"], t0["mask"])
    assert (t0["offset"] != 0).sum() == 2 and (t0["size"] != 0).sum() == 2


def test_the_nearer_centre_wins_a_shared_neighbour():
    # A: centre (2.5, 2.5) cells, in cell (2, 2); B: centre (4.9, 2.5), in cell (4, 2).  Cell
    # (3, 2) neighbours both: A's centre is 1.0 from its middle (3.5, 2.5), B's 1.4.
    a, b = [12, 12, 28, 28], [31.2, 12, 47.2, 28]
    for order in ([a, b], [b, a]):                  # whichever comes first
        t = make_targets([np.array(order, np.float32)], [np.array([0, 1])], 2, (6, 8), 8,
                         neighbours=0.25)
        np.testing.assert_allclose(t["offset"][0, :, 2, 3], [2.5 - 3, 2.5 - 2])   # A's
        assert t["weight"][0, 0, 2, 3] == 0.25


def test_a_centre_cell_is_never_taken_by_a_neighbour():
    a, c = [12, 12, 28, 28], [20, 12, 36, 28]       # centres in cells (2, 2) and (3, 2)
    for order in ([a, c], [c, a]):
        t = make_targets([np.array(order, np.float32)], [np.array([0, 1])], 2, (6, 8), 8,
                         neighbours=0.25)
        assert t["weight"][0, 0, 2, 2] == 1 and t["weight"][0, 0, 2, 3] == 1
        np.testing.assert_allclose(t["offset"][0, :, 2, 2], [0.5, 0.5])          # A's own
        np.testing.assert_allclose(t["offset"][0, :, 2, 3], [0.5, 0.5])          # C's own
        np.testing.assert_allclose(t["size"][0, :, 2, 2], np.log([2, 2]), rtol=1e-6)
        assert t["mask"].sum() == 2


def test_every_trained_cell_decodes_back_to_the_box():
    box = np.array([13, 9, 35, 27], np.float32)
    t = one(box, 1.0)
    cells = np.argwhere(t["weight"][0, 0] > 0)
    assert len(cells) == 9
    for gy, gx in cells:
        hm = np.full((1, 2, 6, 8), -10.0, np.float32)
        hm[0, 0, gy, gx] = 5.0                      # the peak one cell off the centre
        (d,) = decode(hm, t["size"], t["offset"], 8)
        np.testing.assert_allclose(d.xyxy, [box], atol=1e-4)
        (b, s, c), = decode_torch(*map(torch.from_numpy, (hm, t["size"], t["offset"])), 8)
        np.testing.assert_allclose(b, [box], atol=1e-4)


def test_loss_weighs_a_neighbours_error_by_its_weight():
    t = {k: torch.from_numpy(v) for k, v in one([10, 10, 30, 26], 0.25).items()}
    out = (torch.zeros(1, 2, 6, 8), t["size"].clone(), t["offset"].clone())
    base, parts = detection_loss(out, t)
    assert parts["size"] == 0 and parts["offset"] == 0
    out[1][0, 0, 1, 3] += 0.4                       # a neighbour's log width off by 0.4
    out[2][0, 1, 3, 1] -= 0.2                       # another's y offset off by 0.2
    out[1][0, 0, 0, 0] += 9.0                       # an untrained cell: no term
    _, parts = detection_loss(out, t)
    assert parts["size"] == pytest.approx(0.25 * 0.4, rel=1e-5)       # one object: N = 1
    assert parts["offset"] == pytest.approx(0.25 * 0.2, rel=1e-5)
    del t["weight"]                                 # maps without a weight: centres only
    _, parts = detection_loss(out, t)
    assert parts["size"] == 0 and parts["offset"] == 0


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_bad_weights_are_refused(bad):
    with pytest.raises(ValueError, match="neighbours"):
        one([10, 10, 30, 26], bad)
    with pytest.raises(ValueError, match="neighbours"):
        fit_detector((np.zeros((2, 1, 48, 64), np.uint8), [np.zeros((0, 4))] * 2,
                      [np.zeros(0)] * 2), neighbours=bad, epochs=1, progress=False)


def test_training_stores_the_weight_and_uses_it(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, (8, 1, 48, 64), dtype=np.uint8)
    boxes, classes = [], []
    for im in images:
        x, y = rng.integers(4, 40), rng.integers(4, 24)
        im[0, y:y + 16, x:x + 16] = 220
        boxes.append(np.array([[x, y, x + 16, y + 16]], np.float32))
        classes.append(np.array([0]))
    kw = dict(model="bnn", model_args={"width": 8}, epochs=1, batch_size=4, progress=False)
    with_nb = fit_detector((images, boxes, classes), neighbours=0.5, out_dir=tmp_path / "a", **kw)
    without = fit_detector((images, boxes, classes), out_dir=tmp_path / "b", **kw)
    assert with_nb.config["neighbours"] == 0.5 and without.config["neighbours"] == 0.0
    # same seed and data: the neighbours add regression terms, so the size loss differs
    assert with_nb.history[0]["train_size"] != without.history[0]["train_size"]
    saved = json.loads((tmp_path / "a" / "history.json").read_text())
    assert saved[0]["train_size"] == pytest.approx(with_nb.history[0]["train_size"])
