"""The CenterNet-style detector: builds for every backbone, gray and RGB; its model file runs in
the torch-free runtime exactly as torch computes it (integer accumulators identical, maps within
1e-5, same decoded boxes); targets, focal loss and metrics; training end to end with exact
resume and the ``train_command`` entry point.  Data: squares and discs drawn on noise here."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit.data import Normalization
from lowbit.detect.decode import decode
from lowbit.detect.detector import Detector
from lowbit.runtime.graph import Runtime
from lowbit.train.checkpoint import load_checkpoint
from lowbit.train.dataset import ImageSet
from lowbit.train.detect_command import train_command
from lowbit.train.detect_fit import export_detector, fit_detector
from lowbit.train.detect_loss import (class_loss, decode_torch, detection_loss,
                                      detection_metrics, focal_loss, gaussian_radius,
                                      make_targets)
from lowbit.train.detector import BACKBONES, build_detector

torch.set_num_threads(1)
_spec = importlib.util.spec_from_file_location(
    "_runtime_test_export", Path(__file__).resolve().parents[1] / "runtime" / "test_export.py")
_te = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_te)
randomize_bn, torch_accumulators = _te.randomize_bn, _te.torch_accumulators

ALL = [b.replace("W,A,G", "1,2,32") for b in BACKBONES]


def shapes(n, h=48, w=64, channels=1, seed=0, max_obj=3, smin=8, smax=20):
    """(images uint8 (n, C, h, w), boxes, classes): squares (class 0) and discs (class 1)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 70, (n, channels, h, w)).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    boxes, classes = [], []
    for i in range(n):
        bs, cs = [], []
        for _ in range(rng.integers(1, max_obj + 1)):
            s = int(rng.integers(smin, smax + 1))
            x1, y1, c = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1)), \
                int(rng.integers(0, 2))
            if c == 0:
                m = (xx >= x1) & (xx < x1 + s) & (yy >= y1) & (yy < y1 + s)
            else:
                m = (xx + 0.5 - x1 - s / 2) ** 2 + (yy + 0.5 - y1 - s / 2) ** 2 <= s * s / 4
            images[i][:, m] = rng.integers(170, 256, (channels, 1))
            bs.append([x1, y1, x1 + s, y1 + s])
            cs.append(c)
        boxes.append(np.array(bs, np.float32))
        classes.append(np.array(cs, np.int64))
    return images, boxes, classes


# -- the model ----------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ALL)
@pytest.mark.parametrize("shape", [(1, 120, 160), (3, 128, 128)], ids=["gray160x120", "rgb128"])
def test_builds_with_three_maps_on_the_stride_grid(backbone, shape):
    torch.manual_seed(0)
    model = build_detector(backbone, in_channels=shape[0], num_classes=3, width=8)
    hm, size, off = model(torch.randn(2, *shape))
    grid = (shape[1] // 8, shape[2] // 8)
    assert hm.shape == (2, 3) + grid and size.shape == off.shape == (2, 2) + grid
    (hm.sum() + size.sum() + off.sum()).backward()
    assert model.lowbit_spec["kwargs"]["backbone"] == backbone


@pytest.mark.parametrize("stride,shape", [(4, (1, 48, 64)), (16, (3, 240, 320))])
def test_other_strides(stride, shape):
    model = build_detector("bnn", in_channels=shape[0], width=8, stride=stride).eval()
    with torch.no_grad():
        hm, _, _ = model(torch.zeros(1, *shape))
    assert hm.shape == (1, 1, shape[1] // stride, shape[2] // stride)


def test_binary_backbone_keeps_stem_head_and_shortcuts_float():
    from lowbit.train.layers import quant_layers
    model = build_detector("bnn", width=8)
    names = {n for n, _ in quant_layers(model)}
    assert names == {"stages.s1b1.conv", "stages.s2down.conv", "stages.s2b1.conv",
                     "stages.s3down.conv", "stages.s3b1.conv"}
    quant = build_detector("bnn", width=8, head="quant", stem="quant")
    names = {n for n, _ in quant_layers(quant)}
    assert {"stem.conv", "head.conv"} <= names and quant.stem.conv.input_quantizer is None


@pytest.mark.parametrize("kwargs,match", [
    (dict(backbone="bnnx"), "backbone"), (dict(stride=6), "stride"), (dict(width=0), "width"),
    (dict(head="int8"), "head")])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_detector(**kwargs)


# -- runtime == torch -----------------------------------------------------------------------
def _maps_close(out, ref):
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def _untied(ours, ref, threshold=0.3):
    """(ours, ref) heatmap logits with every *ambiguous* cell set to -1e4 in both.  Peak
    picking and thresholding are discontinuous: where a cell and one of its 8 neighbours (or
    the threshold's logit) differ by no more than twice the largest runtime-torch difference,
    the two may decide differently -- unless both tie exactly (plateaus where the receptive
    fields are alike, e.g. all-zero ReLU features under the head's bias).  Everywhere else the
    decoded boxes must be the same."""
    tol = 2 * float(np.abs(ours.astype(np.float64) - ref).max())

    def windows(a):                                          # (..., h, w, 3, 3) neighbours
        pad = np.pad(a.astype(np.float64), [(0, 0), (0, 0), (1, 1), (1, 1)],
                     constant_values=np.nan)
        return np.lib.stride_tricks.sliding_window_view(pad, (3, 3), axis=(2, 3))
    d_ref = windows(ref) - ref[..., None, None]
    d_ours = windows(ours) - ours[..., None, None]
    near = (np.abs(d_ref) <= tol) & ~((d_ref == 0) & (d_ours == 0))
    near[..., 1, 1] = False                                  # the cell itself
    near = near.any(axis=(-2, -1))
    near |= np.abs(ref - np.log(threshold / (1 - threshold))) <= tol
    assert near.mean() < 0.05, f"{near.mean():.1%} of the cells are near ties: a useless test"
    return np.where(near, -1e4, ours).astype(np.float32), np.where(near, -1e4, ref)


def _same_detections(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.class_id, y.class_id)
        np.testing.assert_allclose(x.xyxy, y.xyxy, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(x.confidence, y.confidence, rtol=1e-5, atol=1e-6)


FPN = dict(stride=4, fpn=True, stem_pool=True, blocks=[1, 2], head="quant")


@pytest.mark.parametrize("backbone,shape,kw", [
    ("bnn", (1, 120, 160), {}), ("bnn", (3, 128, 128), {}), ("xnor", (1, 64, 96), {}),
    ("twn", (3, 64, 64), {}), ("dorefa:1,2,32", (1, 64, 64), {}), ("float", (3, 64, 96), {}),
    ("bnn", (1, 120, 160), FPN), ("float", (1, 64, 96), FPN)],
    ids=["bnn", "bnn-rgb", "xnor", "twn", "dorefa", "float", "bnn-fpn", "float-fpn"])
def test_model_file_runs_as_torch(backbone, shape, kw, tmp_path):
    torch.manual_seed(0)
    model = build_detector(backbone, in_channels=shape[0], num_classes=2, width=8, **kw)
    stride = model.stride
    randomize_bn(model)
    with torch.no_grad():     # scores around 0.5 (peaks above the threshold), varying a lot
        model.head.heatmap.bias.normal_(0.0, 0.5)
        model.head.heatmap.weight.mul_(20.0)
    model.eval()
    images = shapes(6, shape[1], shape[2], shape[0], seed=3)[0]
    norm = Normalization.from_images(images)
    export_detector(model, tmp_path / "d.lbm", norm, shape, ["square", "disc"])
    x = ImageSet(images, np.zeros(6, np.int64), norm).batch(slice(0, 6))[0]
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    acc = torch_accumulators(model, x)
    rt = Runtime(tmp_path / "d.lbm")
    rec: dict = {}
    out = rt.run(images, record=rec)
    assert list(rt.meta["outputs"]) == ["heatmap", "size", "offset"]
    for name, r in zip(rt.outputs, ref):
        _maps_close(out[name], r)
    assert set(rec) == set(acc) and (backbone in ("twn", "float")) == (not acc)
    for name, a in rec.items():
        np.testing.assert_array_equal(a, acc[name].astype(np.int64), err_msg=name)
    maps = [out[n] for n in rt.outputs]
    hm_rt, hm_ref = _untied(maps[0], ref[0])
    mine = decode(hm_ref, *ref[1:], stride=stride)
    assert sum(len(d) for d in mine) > 20
    _same_detections(decode(hm_rt, *maps[1:], stride=stride), mine)
    det = Detector(tmp_path / "d.lbm")
    rt_dets = decode(*maps, stride=stride)
    _same_detections(det(images), rt_dets)
    assert det.classes == ["square", "disc"] and det.stride == stride
    single = det(np.ascontiguousarray(images[2].transpose(1, 2, 0)))        # (H, W, C)
    _same_detections(single, rt_dets[2:3])
    assert list(single[0].data["class_name"]) == [det.classes[c] for c in single[0].class_id]


def test_torch_decode_equals_numpy_decode():
    rng = np.random.default_rng(0)
    hm = rng.normal(-1, 2, (3, 2, 9, 11)).astype(np.float32)
    size = rng.normal(0, 1, (3, 2, 9, 11)).astype(np.float32)
    off = rng.uniform(-1.5, 2.5, (3, 2, 9, 11)).astype(np.float32)     # past both clips
    mine = decode(hm, size, off, 8, threshold=0.2, topk=7)
    theirs = decode_torch(*map(torch.from_numpy, (hm, size, off)), 8, threshold=0.2, topk=7)
    for d, (b, s, c) in zip(mine, theirs):
        np.testing.assert_array_equal(d.class_id, c)
        np.testing.assert_allclose(d.xyxy, b, rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(d.confidence, s, rtol=1e-6)


# -- targets, loss, metrics -------------------------------------------------------------------
def test_targets_peak_at_object_centres():
    boxes = [np.array([[8, 8, 24, 24], [40, 0, 64, 14]], np.float32), np.zeros((0, 4))]
    t = make_targets(boxes, [np.array([0, 1]), np.zeros(0)], 2, (6, 8), 8)
    hm = t["heatmap"]
    assert hm.shape == (2, 2, 6, 8) and not hm[1].any()
    assert hm[0, 0, 2, 2] == 1 and hm[0, 1, 0, 6] == 1 and (hm == 1).sum() == 2
    assert np.unravel_index(hm[0, 0].argmax(), (6, 8)) == (2, 2)
    np.testing.assert_allclose(hm[0, 0, 2, 3], np.exp(-1 / (2 * 0.5 ** 2)), rtol=1e-6)  # R=1
    assert hm[0, 0, 2, 4] == 0                                     # outside the window
    np.testing.assert_allclose(t["size"][0, :, 2, 2], np.log([2, 2]))
    np.testing.assert_allclose(t["offset"][0, :, 2, 2], [0.0, 0.0])
    np.testing.assert_allclose(t["offset"][0, :, 0, 6], [0.5, 0.875])
    np.testing.assert_allclose(t["size"][0, :, 0, 6], np.log([3, 14 / 8]), rtol=1e-6)
    assert t["mask"].sum() == 2 and t["count"].tolist() == [2, 0]


def test_targets_decode_back_to_the_boxes():
    """Heatmap targets as logits + size/offset targets -> decode gives the boxes back."""
    images, boxes, classes = shapes(8, 64, 96, seed=5, max_obj=2)
    t = make_targets(boxes, classes, 2, (8, 12), 8)
    logits = np.log(np.clip(t["heatmap"], 1e-6, 1 - 1e-6) / np.clip(1 - t["heatmap"], 1e-6, 1))
    dets = decode(logits, t["size"], t["offset"], 8, threshold=0.99)
    for d, b, c in zip(dets, boxes, classes):
        if len(b) == 2 and (np.abs((b[0, :2] + b[0, 2:]) - (b[1, :2] + b[1, 2:])) < 32).all():
            continue                                   # centres within a cell or two: skip
        order = np.lexsort((d.xyxy[:, 0], d.class_id))
        ref = np.lexsort((b[:, 0], c))
        np.testing.assert_allclose(d.xyxy[order], b[ref], atol=1e-4)
        np.testing.assert_array_equal(d.class_id[order], c[ref])


def test_gaussian_radius_keeps_iou_at_min_overlap():
    for w, h in [(10, 10), (2, 2), (20, 5), (3, 9)]:
        r = gaussian_radius(w, h, 0.7)
        shrunk = (w - 2 * r) * (h - 2 * r) / (w * h)                # both corners inside
        grown = w * h / ((w + 2 * r) * (h + 2 * r))                 # both outside
        inter = (w - r) * (h - r)                                   # one in, one out
        shifted = inter / (2 * w * h - inter)
        assert min(shrunk, grown, shifted) == pytest.approx(0.7, abs=1e-9)


def test_class_loss_is_softmax_cross_entropy_at_the_centres():
    logits = torch.randn(2, 3, 4, 5)
    target = torch.zeros(2, 3, 4, 5)
    target[0, 2, 1, 3] = target[1, 0, 2, 2] = 1.0
    target[0, 1, 0, 0] = 0.9                         # Gaussian tail: no centre, no term
    want = -(torch.log_softmax(logits[0, :, 1, 3], 0)[2]
             + torch.log_softmax(logits[1, :, 2, 2], 0)[0]) / 2
    assert class_loss(logits, target, torch.tensor(2.0)).item() == pytest.approx(want.item())
    t = {"heatmap": target, "mask": target.eq(1).any(1, keepdim=True).float(),
         "size": torch.zeros(2, 2, 4, 5), "offset": torch.zeros(2, 2, 4, 5)}
    out = (logits, torch.zeros(2, 2, 4, 5), torch.zeros(2, 2, 4, 5))
    base, parts = detection_loss(out, t)
    both, parts2 = detection_loss(out, t, class_weight=0.5)
    assert "class" not in parts and parts2["class"] == pytest.approx(want.item())
    assert both.item() == pytest.approx(base.item() + 0.5 * want.item(), rel=1e-6)
    right = torch.full_like(logits, -5.0)            # true class far ahead: loss near 0
    right[0, 2, 1, 3] = right[1, 0, 2, 2] = 5.0
    assert class_loss(right, target, torch.tensor(2.0)).item() < 1e-3


def test_focal_loss_is_centernets_formula():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.2]]]])
    p = torch.sigmoid(logits)
    pos = (1 - p[0, 0, 0, 0]) ** 2 * torch.log(p[0, 0, 0, 0])
    neg = sum((1 - target[0, 0, i, j]) ** 4 * p[0, 0, i, j] ** 2 * torch.log(1 - p[0, 0, i, j])
              for i, j in [(0, 1), (1, 0), (1, 1)])
    got = focal_loss(logits, target, torch.tensor(1.0))
    assert got.item() == pytest.approx(-(pos + neg).item(), rel=1e-6)
    assert focal_loss(torch.full((1, 1, 2, 2), 50.0), target.eq(1).float(),
                      torch.tensor(1.0)).isfinite()


def test_loss_decreases_on_a_tiny_set():
    torch.manual_seed(0)
    images, boxes, classes = shapes(16, seed=1)
    norm = Normalization.from_images(images)
    x = ImageSet(images, np.zeros(16, np.int64), norm).batch(slice(0, 16))[0]
    t = {k: torch.from_numpy(v) for k, v in make_targets(boxes, classes, 2, (6, 8), 8).items()}
    model = build_detector("bnn", num_classes=2, width=8)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    losses = []
    for _ in range(25):
        loss, parts = detection_loss(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for m in model.modules():
            if hasattr(m, "post_step"):
                m.post_step()
        losses.append(parts["heatmap"])
    assert losses[-1] < 0.6 * losses[0]
    assert all(p.abs().max() <= 1 for n, p in model.named_parameters()
               if n.startswith("stages") and n.endswith("conv.weight") and "down" not in n)


def test_detection_metrics_by_hand():
    gt_b = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    gt_c = [np.array([0, 0])]
    perfect = [(gt_b[0], np.array([0.9, 0.8], np.float32), np.array([0, 0]))]
    assert detection_metrics(perfect, gt_b, gt_c) == {"precision": 1.0, "recall": 1.0, "ap50": 1.0}
    # a duplicate (FP), a wrong class (FP) and a low-score hit below the 0.3 threshold
    preds = [(np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 30], [20, 20, 30, 30]],
                       np.float32), np.array([0.9, 0.8, 0.7, 0.2], np.float32),
              np.array([0, 0, 1, 0]))]
    m = detection_metrics(preds, gt_b, gt_c)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == 0.5
    assert m["ap50"] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))   # class 1 has no objects
    assert detection_metrics([(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))], gt_b,
                             gt_c) == {"precision": 0.0, "recall": 0.0, "ap50": 0.0}


# -- training -----------------------------------------------------------------------------------
def test_augmentation_moves_pixels_and_boxes_together():
    from lowbit.train.detect_augment import augment_batch as _augment
    x = torch.zeros(3, 1, 16, 24)
    x[:, :, 4:8, 2:6] = 1.0                                     # the object of every image
    boxes = [np.array([[2, 4, 6, 8]], np.float32)] * 3
    flips = np.array([True, False, False])
    shifts = np.array([[0, 0], [5, -2], [-4, 0]])                # (dx, dy)
    y, b = _augment(x, boxes, flips, shifts)
    for i in range(3):
        x1, y1, x2, y2 = b[i][0].astype(int)
        assert y[i, 0].sum() == (x2 - x1) * (y2 - y1) == y[i, 0, y1:y2, x1:x2].sum()
    np.testing.assert_array_equal(b[0], [[18, 4, 22, 8]])
    np.testing.assert_array_equal(b[1], [[7, 2, 11, 6]])
    np.testing.assert_array_equal(b[2], [[0, 4, 2, 8]])       # half of it is left: kept
    _, b = _augment(x, boxes, None, np.array([[-5, 0]] * 3))
    assert (b[0] == 0).all()                                     # a quarter left: dropped
    assert boxes[0].tolist() == [[2, 4, 6, 8]]                   # inputs untouched


def test_zoom_and_photometric_keep_boxes_on_their_pixels():
    from lowbit.train.detect_augment import augment_batch as _augment
    x = torch.zeros(3, 2, 48, 64)
    x[:, :, 20:30, 24:36] = 1.0                                 # the object of every image
    boxes = [np.array([[24, 20, 36, 30]], np.float32)] * 3
    zooms = np.array([1.0, 1.5, 0.8])
    y, b = _augment(x, boxes, None, None, zooms)
    for i in range(3):
        inside = (y[i, 0] > 0.5).nonzero().numpy()             # (row, col) of the object
        x1, y1 = inside[:, 1].min(), inside[:, 0].min()
        x2, y2 = inside[:, 1].max() + 1, inside[:, 0].max() + 1
        np.testing.assert_allclose(b[i][0], [x1, y1, x2, y2], atol=1.0)
    np.testing.assert_allclose(b[1][0], [(24 - 32) * 1.5 + 32, (20 - 24) * 1.5 + 24,
                                         (36 - 32) * 1.5 + 32, (30 - 24) * 1.5 + 24])
    torch.testing.assert_close(y[0], x[0])                     # zoom 1: unchanged
    # zoomed in so far that less than half of a corner object stays: dropped
    _, b = _augment(x, [np.array([[0, 0, 10, 10]], np.float32)] * 3, None, None,
                    np.array([2.0, 2.0, 2.0]))
    assert (b[0] == 0).all()
    # photometric: boxes untouched; without noise exactly x * contrast + brightness
    photo = (np.array([1.2, 0.8, 1.0]), np.array([[0.1, -0.1], [0.0, 0.2], [0.0, 0.0]]),
             np.zeros(3), np.random.default_rng(0))
    y, b = _augment(x, boxes, None, None, None, photo)
    assert all((bb == boxes[0]).all() for bb in b)
    torch.testing.assert_close(y[0, 1], x[0, 1] * 1.2 - 0.1)
    torch.testing.assert_close(y[1, 1], x[1, 1] * 0.8 + 0.2)
    photo = (np.ones(3), np.zeros((3, 2)), np.array([0.0, 0.1, 0.0]), np.random.default_rng(0))
    y, _ = _augment(x, boxes, None, None, None, photo)
    assert torch.equal(y[0], x[0]) and 0.05 < float((y[1] - x[1]).std()) < 0.15
    assert boxes[0].tolist() == [[24, 20, 36, 30]]             # inputs untouched


def test_stem_pool_and_blocks_per_stage():
    m = build_detector("bnn", in_channels=3, num_classes=2, width=8, stride=8, stem_pool=True,
                       blocks="1,2", head="quant")
    names = [n for n, _ in m.stages.named_children()]
    assert names == ["s2b1", "s3down", "s3b1", "s3b2"]
    hm, size, off = m(torch.zeros(1, 3, 48, 64))
    assert hm.shape == (1, 2, 6, 8) and size.shape == off.shape == (1, 2, 6, 8)
    assert m.lowbit_spec["kwargs"]["blocks"] == [1, 2] and m.detector_args["stem_pool"]
    assert build_detector(width=8, blocks=2).lowbit_spec["kwargs"]["blocks"] == 2
    assert [n for n, _ in build_detector(width=8, blocks=[0, 1, 0]).stages.named_children()] \
        == ["s2down", "s2b1", "s3down"]
    for bad in ("1,2", [1, -1, 1], "a,b,c", True):
        with pytest.raises(ValueError, match="blocks"):
            build_detector(width=8, blocks=bad)
    m = build_detector(width=8, stride=4, stem_pool=True, blocks=1)   # one stage, at stride 4
    assert [n for n, _ in m.stages.named_children()] == ["s2b1"]
    assert m(torch.zeros(1, 1, 16, 16))[0].shape == (1, 1, 4, 4)


def test_fpn_head_sees_the_fine_grid_and_the_upsampled_coarse_one():
    m = build_detector("bnn", num_classes=3, width=8, **FPN)
    assert [n for n, _ in m.stages.named_children()] == ["s2b1"]          # stride 4
    assert [n for n, _ in m.coarse.named_children()] == ["s3down", "s3b1", "s3b2"]   # 8
    assert m.head.conv.in_channels == 8 + 16 and m.head.conv.out_channels == 16
    assert m.stride == 4 and m.lowbit_spec["kwargs"]["fpn"] is True
    hm, size, off = m(torch.zeros(2, 1, 48, 64))
    assert hm.shape == (2, 3, 12, 16) and size.shape == off.shape == (2, 2, 12, 16)
    m.eval()                   # the head's input: fine features, then each coarse cell twice
    seen = {}
    m.head.conv.register_forward_pre_hook(lambda mod, a: seen.setdefault("x", a[0]))
    x = torch.randn(1, 1, 48, 64)
    with torch.no_grad():
        m(x)
        fine = m.stages(m.stem(x))
        coarse = m.coarse(fine)
    assert torch.equal(seen["x"][:, :8], fine)
    assert torch.equal(seen["x"][:, 8:, ::2, ::2], coarse)
    assert torch.equal(seen["x"][:, 8:, 1::2, 1::2], coarse)
    assert not build_detector(width=8).lowbit_spec["kwargs"]["fpn"]
    with pytest.raises(ValueError, match="fpn"):
        build_detector(width=8, stride=16, fpn=True)


class Killed(Exception):
    pass


TINY = dict(model="bnn", model_args=dict(width=8), epochs=2, batch_size=8, lr=3e-3,
            shift=0.1, scale=0.2, photometric=0.3, jpeg=0.5, progress=False)


def _states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fit_checkpoints_resumes_exactly_and_exports(tmp_path):
    train, val = shapes(24, seed=0), shapes(8, seed=1)
    ref = fit_detector(train, val, out_dir=tmp_path / "a", **TINY)
    assert (tmp_path / "a" / "checkpoint.pt").exists()
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and {"val_ap50", "val_recall"} <= set(hist[0])

    def stop(rec):
        if rec["epoch"] == 1:
            raise Killed
    with pytest.raises(Killed):
        fit_detector(train, val, out_dir=tmp_path / "b", on_epoch_end=stop, **TINY)
    with pytest.raises(FileExistsError):
        fit_detector(train, val, out_dir=tmp_path / "b", **TINY)
    with pytest.raises(ValueError, match="'lr'"):
        fit_detector(train, val, out_dir=tmp_path / "b", resume=True, **{**TINY, "lr": 1e-3})
    resumed = fit_detector(train, val, out_dir=tmp_path / "b", resume=True, **TINY)
    _states_equal(ref.model.state_dict(), resumed.model.state_dict())
    assert [h["train_loss"] for h in ref.history] == [h["train_loss"] for h in resumed.history]

    ckpt = load_checkpoint(tmp_path / "b")
    cfg = ckpt["config"]
    assert ckpt["epoch"] == 2 and ckpt["complete"] and ckpt["optimizer_state"] and ckpt["rng"]
    assert (cfg["backbone"], cfg["in_channels"], cfg["num_classes"], cfg["stride"]) == \
        ("bnn", 1, 2, 8)
    assert cfg["input_shape"] == [1, 48, 64] and cfg["classes"] == ["0", "1"]
    assert ckpt["model"]["kwargs"]["width"] == 8 and ckpt["normalization"]

    path = tmp_path / "d.lbm"
    export_detector(resumed.model, path, resumed.normalization, cfg["input_shape"],
                    cfg["classes"])
    det = Detector(path, threshold=0.1)
    x = ImageSet(val[0], np.zeros(8, np.int64), resumed.normalization).batch(slice(0, 8))[0]
    with torch.no_grad():
        ref = [t.numpy() for t in resumed.model.eval()(x)]
    maps = det.maps(val[0])
    _maps_close(maps[0], ref[0])
    _same_detections(det(val[0]), decode(*maps, 8, threshold=0.1))
    hm_rt, hm_ref = _untied(maps[0], ref[0], threshold=0.1)
    _same_detections(decode(hm_rt, *maps[1:], 8, threshold=0.1),
                     decode(hm_ref, *ref[1:], 8, threshold=0.1))


def test_jpeg_round_trips_the_drawn_images_only():
    from lowbit.train.detect_augment import jpeg_batch
    rng = np.random.default_rng(0)
    for c in (1, 3, 4):
        x = torch.from_numpy(rng.integers(0, 256, (3, c, 24, 32), dtype=np.uint8))
        y = jpeg_batch(x, np.array([0, 40, 95]))
        assert y.dtype == torch.uint8 and y.shape == x.shape
        assert torch.equal(y[0], x[0])                                    # quality 0: as is
        err = [float((y[i].float() - x[i].float()).abs().mean()) for i in (1, 2)]
        assert err[0] > err[1] > 0                                       # lower quality, more loss
        assert torch.equal(jpeg_batch(x, np.array([0, 40, 95])), y)       # deterministic
    # RGB is coded as one colour image (4:2:0 chroma): a gray image stays gray
    g = torch.from_numpy(np.repeat(rng.integers(0, 256, (1, 1, 24, 32), dtype=np.uint8), 3, 1))
    out = jpeg_batch(g, [50])
    assert (out[0, 0].int() - out[0, 1].int()).abs().max() <= 2
    assert torch.equal(jpeg_batch(g, [0]), g)
    with pytest.raises(ValueError, match="qualities"):
        jpeg_batch(g, [50, 60])
    with pytest.raises(ValueError, match="jpeg"):
        fit_detector(shapes(4), jpeg=1.5, **{k: v for k, v in TINY.items() if k != "jpeg"})


def test_tta_averages_the_mirrored_pass_and_is_mirror_symmetric(tmp_path):
    images, _, _ = shapes(6, channels=3, seed=3)                  # (6, 3, 48, 64)
    torch.manual_seed(0)
    model = build_detector("bnn", in_channels=3, num_classes=2, width=8)
    randomize_bn(model)
    model.eval()
    norm = Normalization.from_images(images)
    export_detector(model, tmp_path / "d.lbm", norm, images.shape[1:], ["a", "b"])
    plain = Detector(tmp_path / "d.lbm", threshold=0.2)
    tta = Detector(tmp_path / "d.lbm", threshold=0.2, tta=True)
    a, b = plain.maps(images), plain.maps(np.ascontiguousarray(images[..., ::-1]))
    want = [(a[0] + b[0][..., ::-1]) / 2, (a[1] + b[1][..., ::-1]) / 2,
            (a[2] + np.concatenate([1 - b[2][:, :1], b[2][:, 1:]], 1)[..., ::-1]) / 2]
    for got, w in zip(tta.maps(images), want):
        np.testing.assert_allclose(got, w, rtol=0, atol=1e-6)
    # the boxes of a mirrored frame are the mirrored boxes of the frame
    W = images.shape[3]
    fwd, mir = tta(images), tta(np.ascontiguousarray(images[..., ::-1]))
    assert sum(len(d) for d in fwd) > 5
    for d, m in zip(fwd, mir):
        flipped = np.stack([W - d.xyxy[:, 2], d.xyxy[:, 1], W - d.xyxy[:, 0], d.xyxy[:, 3]], 1)
        i, j = np.lexsort((flipped[:, 0], flipped[:, 1], d.class_id)), \
            np.lexsort((m.xyxy[:, 0], m.xyxy[:, 1], m.class_id))
        np.testing.assert_array_equal(d.class_id[i], m.class_id[j])
        np.testing.assert_allclose(flipped[i], m.xyxy[j], atol=1e-3)
        np.testing.assert_allclose(d.confidence[i], m.confidence[j], atol=1e-6)
    export_detector(model, tmp_path / "odd.lbm", norm, images.shape[1:], ["a", "b"],
                    extra={"stride": 12})              # a file whose grid is not the frame's
    with pytest.raises(ValueError, match="multiple of the stride"):
        Detector(tmp_path / "odd.lbm", tta=True)


def _fake_yolo(monkeypatch, train, val):
    sets = {"train": train, "val": val}
    mod = types.ModuleType("lowbit.data.yolo")
    mod.load_yolo = lambda root, split="train": types.SimpleNamespace(
        images=sets[split][0], boxes=sets[split][1], classes=sets[split][2],
        names=("square", "disc"), files=(split,))
    monkeypatch.setitem(sys.modules, "lowbit.data.yolo", mod)


def test_train_command_writes_checkpoint_history_and_model_file(tmp_path, monkeypatch, capsys):
    _fake_yolo(monkeypatch, shapes(16, seed=0), shapes(8, seed=1))
    out = tmp_path / "run"
    kw = dict(out=out, epochs=1, batch_size=8, width=8, threads=1, progress=False)
    assert train_command("data", **kw) == 0
    assert {"checkpoint.pt", "history.json", "detector.lbm"} <= {p.name for p in out.iterdir()}
    det = Detector(out / "detector.lbm")
    assert det.classes == ["square", "disc"] and det.input_shape == (1, 48, 64)
    assert det.runtime.meta["model"]["kwargs"]["width"] == 8
    assert "detector.lbm" in capsys.readouterr().out
    assert train_command("data", **kw) == 2                         # checkpoint exists
    assert "--resume" in capsys.readouterr().err
    assert train_command("data", **{**kw, "resume": True}) == 0    # complete: re-exports
    assert train_command("data", **{**kw, "resume": True, "model": "xnor"}) == 2
    assert "'backbone'" in capsys.readouterr().err
    assert train_command("data", **{**kw, "epochs": 0}) == 2
    assert train_command("data", **{**kw, "stride": 5}) == 2
    fpn = tmp_path / "fpn"
    assert train_command("data", **{**kw, "out": fpn, "stride": 4, "fpn": True,
                                    "class_loss": 0.5}) == 0
    hist = json.loads((fpn / "history.json").read_text())
    assert hist[0]["train_class"] > 0 and "train_class" not in \
        json.loads((out / "history.json").read_text())[0]
    assert train_command("data", **{**kw, "out": tmp_path / "x", "class_loss": -1.0}) == 2
    det = Detector(fpn / "detector.lbm")
    assert det.stride == 4 and det.runtime.meta["model"]["kwargs"]["fpn"] is True


def _write_yolo(root: Path, split: str, data) -> None:
    from PIL import Image
    images, boxes, classes = data
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    h, w = images.shape[2:]
    for i, (im, b, c) in enumerate(zip(images, boxes, classes)):
        Image.fromarray(im[0]).save(root / "images" / split / f"{i:04d}.png")
        lines = [f"{k} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}"
                 for (x1, y1, x2, y2), k in zip(b, c)]
        (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")


def test_load_data_reads_a_yolo_folder(tmp_path):
    """With the real reader: a val split of its own, or the last 15% of train held out."""
    pytest.importorskip("lowbit.data.yolo")
    from lowbit.train.detect_command import load_data
    train, val = shapes(20, seed=0), shapes(4, seed=1)
    _write_yolo(tmp_path / "a", "train", train)
    _write_yolo(tmp_path / "a", "val", val)
    (tmp_path / "a" / "data.yaml").write_text("train: images/train\nval: images/val\n"
                                              "names: [square, disc]\n")
    tr, va = load_data(tmp_path / "a")
    np.testing.assert_array_equal(tr.images, train[0])
    np.testing.assert_array_equal(va.images, val[0])
    np.testing.assert_allclose(tr.boxes[3], train[1][3], atol=1e-3)
    assert tr.names == ["square", "disc"] and [c.tolist() for c in va.classes] == \
        [c.tolist() for c in val[2]]
    _write_yolo(tmp_path / "b", "train", train)
    (tmp_path / "b" / "data.yaml").write_text("train: images/train\nval: images/train\n"
                                              "names: [square, disc]\n")
    tr, va = load_data(tmp_path / "b")
    assert len(tr.images) == 17 and len(va.images) == 3
    np.testing.assert_array_equal(va.images, train[0][17:])
