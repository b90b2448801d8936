"""CenterNet targets on the stride grid and the detection loss.

Zhou, Wang, Krähenbühl 2019, "Objects as Points" (CenterNet); the centroid-on-a-1/8-grid idea
is Edge Impulse's FOMO.  An object with box (x1, y1, x2, y2) in pixels (x2, y2 exclusive) and
class k has its centre ``p = ((x1 + x2) / 2, (y1 + y2) / 2) / s`` in grid units (``s`` the
stride); its centre cell is ``c = floor(p)`` (clipped to the grid).  Targets (numpy, per image):

    heatmap  Y[k, y, x] = max over objects of class k of
             exp(-((x - c_x)^2 + (y - c_y)^2) / (2 sigma^2)),   |x - c_x|, |y - c_y| <= R
             R = max(min_radius, floor(r)), sigma = (2 R + 1) / 6 (CenterNet), where r is the
             largest corner shift keeping IoU >= min_overlap with the box (CornerNet's three
             cases, w, h in grid units, solved exactly):
               r1 = (b1 - sqrt(b1^2 - 4 c1)) / 2,      b1 = w + h, c1 = w h (1 - o) / (1 + o)
               r2 = (b2 - sqrt(b2^2 - 16 c2)) / 8,     b2 = 2 (w + h), c2 = (1 - o) w h
               r3 = (-b3 + sqrt(b3^2 - 16 o c3)) / (8 o), b3 = 2 o (w + h), c3 = (o - 1) w h
               r = min(r1, r2, r3);  Y = 1 exactly at each centre cell only
    size     (log(w / s), log(h / s)) at the centre cell          (log grid units)
    offset   p - c, in [0, 1), at the centre cell
    mask     1 at the centre cells (a later object on the same cell overwrites its size/offset)
    weight   the regression weight: 1 at the centre cells; with ``neighbours`` = u > 0 also
             u at the 8 cells g around each centre, whose targets are the same size and the
             offset p - g, in [-1, 2) (a centre cell is never taken by a neighbour; of two
             neighbours claiming a cell the nearer centre wins)

Why the neighbours: the heatmap's peak is not always the centre cell.  On validation video
(the d960 detector, 2026-11-30) 15-17 % of the detections peaked at a neighbour, whose size and
offset were never trained: a fifth of those had IoU < 0.5 with their object (1.5 % of the
centre-cell ones), most of the badly placed boxes.  Decoding clips offsets to [-1, 2], so a
neighbour can place the centre in the right cell.

Loss (``detection_loss``), with p = sigmoid(heatmap logit) and N the number of objects:

    L_k    = -1/N sum_{xyk} { (1 - p)^a log(p)                  if Y = 1
                            { (1 - Y)^b p^a log(1 - p)          otherwise      (a = 2, b = 4)
    L_size = 1/N sum_{cells} weight |size_pred - size|_1,  L_off = 1/N sum weight |offset_pred - offset|_1
    L      = L_k + lambda_size L_size + lambda_off L_off      (lambda_size = lambda_off = 1)
             [+ lambda_cls L_cls,  L_cls = -1/N sum_{centres} log softmax_K(logits)[k]
              (``class_weight``; 0 by default): the classes compete at the centre cell]
    with a teacher (knowledge distillation, ``heatmap_distillation``; weight a, temperature T):
    L_k   <- (1 - a) L_k + a T^2/N sum_{xyk} KL( sigmoid(t/T) || sigmoid(s/T) )  (Bernoulli KL)

The penalty-reduced focal loss (CenterNet's variant of Lin et al.'s focal loss) down-weights
negatives near a centre by (1 - Y)^b; log(p) and log(1 - p) come from ``logsigmoid`` of the
logits, so saturated logits stay finite.  Sizes are regressed in log grid units (not CenterNet's
raw pixels with lambda 0.1) so that small and large boxes weigh alike.

Validation helpers: :func:`decode_torch` (the torch twin of ``lowbit.detect.decode.decode``;
``lowbit.train`` may not import ``lowbit.detect``) and :func:`detection_metrics` (precision /
recall at IoU 0.5 and a VOC-style AP@0.5, numpy).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["gaussian_radius", "draw_gaussian", "make_targets", "focal_loss", "class_loss",
           "heatmap_distillation", "detection_loss",
           "decode_torch", "detection_metrics", "ALPHA", "BETA", "THRESHOLD", "TOPK"]

ALPHA, BETA = 2.0, 4.0
OFFSET_MIN, OFFSET_MAX = -1.0, 2.0  # decoding's offset clip (lowbit.detect.decode's twin)
THRESHOLD, TOPK = 0.3, 100          # default decoding: score >= 0.3, at most 100 per image


def gaussian_radius(w: float, h: float, min_overlap: float = 0.7) -> float:
    """The largest corner shift r (grid units) keeping IoU >= ``min_overlap`` with a w x h box
    (CornerNet's three cases, module docstring)."""
    o = float(min_overlap)
    b1, c1 = w + h, w * h * (1 - o) / (1 + o)
    r1 = (b1 - math.sqrt(max(0.0, b1 * b1 - 4 * c1))) / 2
    b2, c2 = 2 * (w + h), (1 - o) * w * h
    r2 = (b2 - math.sqrt(max(0.0, b2 * b2 - 16 * c2))) / 8
    b3, c3 = 2 * o * (w + h), (o - 1) * w * h
    r3 = (-b3 + math.sqrt(max(0.0, b3 * b3 - 16 * o * c3))) / (8 * o)
    return max(0.0, min(r1, r2, r3))


def draw_gaussian(heat: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """``heat`` (h, w) <- max(heat, Gaussian of sigma (2 R + 1) / 6 centred on cell (cx, cy),
    cut to |dx|, |dy| <= R); the centre gets exactly 1."""
    h, w = heat.shape
    sigma = (2 * radius + 1) / 6.0
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(d[None, :] ** 2 + d[:, None] ** 2) / (2 * sigma * sigma))   # (2R+1, 2R+1)
    x0, x1 = max(0, cx - radius), min(w, cx + radius + 1)
    y0, y1 = max(0, cy - radius), min(h, cy + radius + 1)
    patch = g[y0 - cy + radius:y1 - cy + radius, x0 - cx + radius:x1 - cx + radius]
    np.maximum(heat[y0:y1, x0:x1], patch.astype(heat.dtype), out=heat[y0:y1, x0:x1])


def make_targets(boxes, classes, num_classes: int, grid_hw, stride: int,
                 min_overlap: float = 0.7, min_radius: int = 1,
                 neighbours: float = 0.0) -> dict[str, np.ndarray]:
    """CenterNet targets of a batch (module docstring).  ``boxes``: one float (k, 4) x1y1x2y2
    pixel array per image; ``classes``: one int (k,) array per image; ``grid_hw`` = (h, w) of
    the output grid; ``neighbours``: the regression weight of the 8 cells around each centre
    (0: centres only).  Returns float32 ``heatmap`` (N, K, h, w), ``size`` (N, 2, h, w),
    ``offset`` (N, 2, h, w), ``mask`` (N, 1, h, w), ``weight`` (N, 1, h, w) and ``count``
    (N,): objects per image.  Boxes without area (w or h <= 0) are skipped; classes outside
    0..K-1 are errors."""
    if not (math.isfinite(neighbours) and neighbours >= 0):
        raise ValueError(f"neighbours: expected a weight >= 0, got {neighbours!r}")
    gh, gw = (int(v) for v in grid_hw)
    n = len(boxes)
    if len(classes) != n:
        raise ValueError(f"classes: expected {n} arrays (one per image), got {len(classes)}")
    heat = np.zeros((n, num_classes, gh, gw), np.float32)
    size = np.zeros((n, 2, gh, gw), np.float32)
    offset = np.zeros((n, 2, gh, gw), np.float32)
    mask = np.zeros((n, 1, gh, gw), np.float32)
    weight = np.zeros((n, 1, gh, gw), np.float32)
    near = np.full((n, gh, gw), np.inf)          # distance of a neighbour cell's claimant
    count = np.zeros(n, np.float32)
    for i, (b, c) in enumerate(zip(boxes, classes)):
        b = np.asarray(b, np.float64).reshape(-1, 4) / stride     # (k, 4) grid units
        c = np.asarray(c, np.int64).reshape(-1)
        if len(c) != len(b):
            raise ValueError(f"image {i}: {len(b)} boxes but {len(c)} classes")
        for (x1, y1, x2, y2), k in zip(b, c):
            bw, bh = x2 - x1, y2 - y1
            if not (bw > 0 and bh > 0):
                continue
            if not 0 <= k < num_classes:
                raise ValueError(f"image {i}: class {k} outside 0..{num_classes - 1}")
            px, py = (x1 + x2) / 2, (y1 + y2) / 2
            cx = min(gw - 1, max(0, int(math.floor(px))))
            cy = min(gh - 1, max(0, int(math.floor(py))))
            r = max(int(min_radius), int(gaussian_radius(bw, bh, min_overlap)))
            draw_gaussian(heat[i, k], cx, cy, r)
            size[i, :, cy, cx] = (math.log(bw), math.log(bh))
            offset[i, :, cy, cx] = (min(max(px - cx, 0.0), 1.0), min(max(py - cy, 0.0), 1.0))
            mask[i, 0, cy, cx] = weight[i, 0, cy, cx] = 1.0
            count[i] += 1
            if neighbours > 0:
                _claim_neighbours(i, px, py, cx, cy, (bw, bh), neighbours, size, offset,
                                  mask, weight, near)
    return {"heatmap": heat, "size": size, "offset": offset, "mask": mask, "weight": weight,
            "count": count}


def _claim_neighbours(i, px, py, cx, cy, wh, u, size, offset, mask, weight, near) -> None:
    """Give the cells around centre cell (cx, cy) of image ``i`` this object's size and
    offset p - g with weight ``u``, unless a centre holds the cell or a nearer centre
    claimed it (``near``: the claimant's distance from the cell's middle)."""
    gh, gw = mask.shape[2:]
    for gy in range(max(0, cy - 1), min(gh, cy + 2)):
        for gx in range(max(0, cx - 1), min(gw, cx + 2)):
            dist = math.hypot(px - gx - 0.5, py - gy - 0.5)
            if mask[i, 0, gy, gx] or dist >= near[i, gy, gx]:
                continue
            near[i, gy, gx] = dist
            size[i, :, gy, gx] = (math.log(wh[0]), math.log(wh[1]))
            offset[i, :, gy, gx] = (min(max(px - gx, -1.0), 2.0), min(max(py - gy, -1.0), 2.0))
            weight[i, 0, gy, gx] = u


def focal_loss(logits: torch.Tensor, target: torch.Tensor, num_objects: torch.Tensor,
               alpha: float = ALPHA, beta: float = BETA) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (module docstring), summed over the batch and
    divided by ``max(1, num_objects)``.  ``logits``, ``target``: (N, K, h, w)."""
    pos = target.eq(1).to(logits.dtype)                            # (N, K, h, w)
    p = torch.sigmoid(logits)
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos_term = (1 - p).pow(alpha) * log_p * pos
    neg_term = (1 - target).pow(beta) * p.pow(alpha) * log_1mp * (1 - pos)
    return -(pos_term.sum() + neg_term.sum()) / num_objects.clamp_min(1)


def class_loss(logits: torch.Tensor, target: torch.Tensor, num_objects: torch.Tensor
               ) -> torch.Tensor:
    """Softmax cross-entropy across the K heatmap logits at each object's centre cell (where
    ``target`` is 1 for its class), summed and divided by ``max(1, num_objects)``: the focal
    loss scores every class on its own; this term ranks the true class above the others
    where classes compete (T-shirt vs bag on small sprites)."""
    pos = target.eq(1).to(logits.dtype)                            # (N, K, h, w) one-hot
    return -(pos * F.log_softmax(logits, dim=1)).sum() / num_objects.clamp_min(1)


def heatmap_distillation(student: torch.Tensor, teacher: torch.Tensor,
                         num_objects: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Knowledge distillation of a heatmap (Hinton et al. 2015 with a sigmoid per class and
    cell instead of one softmax): the Bernoulli KL divergence

        KL(q || p) = q log(q / p) + (1 - q) log((1 - q) / (1 - p)),
        q = sigmoid(teacher / T),  p = sigmoid(student / T),

    summed over every cell and class, times ``T^2``, divided by ``max(1, num_objects)``
    (the focal loss's normalisation).  It is 0 where the student agrees with the teacher, so
    the many background cells the teacher is sure of add little; its gradient in the student's
    logit is ``T (p - q)``.  ``student``, ``teacher``: logits (N, K, h, w)."""
    t = float(temperature)
    s, q_logit = student / t, teacher.detach() / t
    q = torch.sigmoid(q_logit)
    kl = q * (F.logsigmoid(q_logit) - F.logsigmoid(s)) + \
        (1 - q) * (F.logsigmoid(-q_logit) - F.logsigmoid(-s))
    return kl.sum() * (t * t) / num_objects.clamp_min(1)


def detection_loss(outputs, targets: dict, size_weight: float = 1.0,
                   offset_weight: float = 1.0, class_weight: float = 0.0,
                   teacher_heatmap: torch.Tensor | None = None, distill: float = 0.5,
                   temperature: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``(total, {"heatmap", "size", "offset"[, "class"][, "distill"]})`` for model
    ``outputs`` = (heatmap_logits, size, offset) and :func:`make_targets`' maps as tensors on
    the outputs' device; ``class_weight`` > 0 adds that times :func:`class_loss` (and its
    "class" part); with ``teacher_heatmap`` (a teacher's heatmap logits on the same batch) the
    heatmap term is ``(1 - distill) * focal + distill * heatmap_distillation`` (module
    docstring; sizes and offsets keep the ground truth)."""
    hm, size, off = outputs
    n_obj = targets["mask"].sum()
    mask = targets["mask"]                                         # (N, 1, h, w)
    l_hm = focal_loss(hm, targets["heatmap"], n_obj)
    l_kd = None
    if teacher_heatmap is not None:
        if teacher_heatmap.shape != hm.shape:
            raise ValueError(f"teacher: its heatmap is {tuple(teacher_heatmap.shape)}, the "
                             f"student's {tuple(hm.shape)} (same classes, stride and input "
                             f"size needed)")
        l_kd = heatmap_distillation(hm, teacher_heatmap, n_obj, temperature)
        l_hm = (1.0 - distill) * l_hm + distill * l_kd
    weight = targets.get("weight", mask)                           # (N, 1, h, w)
    l_size = ((size - targets["size"]).abs() * weight).sum() / n_obj.clamp_min(1)
    l_off = ((off - targets["offset"]).abs() * weight).sum() / n_obj.clamp_min(1)
    total = l_hm + size_weight * l_size + offset_weight * l_off
    parts = {"heatmap": float(l_hm.detach()), "size": float(l_size.detach()),
             "offset": float(l_off.detach())}
    if class_weight > 0:
        l_cls = class_loss(hm, targets["heatmap"], n_obj)
        total = total + class_weight * l_cls
        parts["class"] = float(l_cls.detach())
    if l_kd is not None:
        parts["distill"] = float(l_kd.detach())
    return total, parts


# -- validation: decode (torch twin of lowbit.detect.decode) and precision / recall / AP --------

def decode_torch(hm: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, stride: int,
                 threshold: float = THRESHOLD, topk: int = TOPK) -> list[tuple]:
    """Torch twin of ``lowbit.detect.decode.decode`` (used for validation; ``lowbit.train``
    may not import ``lowbit.detect``): ``[(xyxy (m, 4), score (m,), class (m,))]`` numpy."""
    keep = hm >= F.max_pool2d(hm, 3, 1, 1)                         # (N, K, h, w) 3x3 peaks
    score = torch.sigmoid(hm.double())
    gh, gw = hm.shape[2:]
    out = []
    for i in range(hm.shape[0]):
        cls, ys, xs = torch.nonzero(keep[i] & (score[i] >= threshold), as_tuple=True)
        s = score[i][cls, ys, xs]
        order = torch.argsort(-s, stable=True)[:topk]
        cls, ys, xs, s = cls[order], ys[order], xs[order], s[order]
        dx, dy = offset[i][:, ys, xs].double().clamp(OFFSET_MIN, OFFSET_MAX)
        lw, lh = size[i][:, ys, xs].double().clamp(-20, 20)
        cx, cy = (xs + dx) * stride, (ys + dy) * stride
        bw, bh = lw.exp() * stride, lh.exp() * stride
        W, H = gw * stride, gh * stride
        xyxy = torch.stack([(cx - bw / 2).clamp(0, W), (cy - bh / 2).clamp(0, H),
                            (cx + bw / 2).clamp(0, W), (cy + bh / 2).clamp(0, H)], 1)
        out.append((xyxy.float().numpy(), s.float().numpy(), cls.numpy()))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (m, n) of x1y1x2y2 boxes a (m, 4) and b (n, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-12)


def detection_metrics(preds, gt_boxes, gt_classes, threshold: float = THRESHOLD,
                      iou: float = 0.5) -> dict[str, float]:
    """``precision`` / ``recall`` of the predictions with score >= ``threshold`` and ``ap50``
    (mean over classes with objects of the all-point interpolated AP), matching greedily by
    score per image and class (PASCAL VOC): a prediction is a true positive when its best-IoU
    object of its class has IoU >= ``iou`` and was not matched before.  ``preds``:
    ``[(xyxy, score, class)]`` per image."""
    recs: dict[int, list] = {}                  # class -> [(score, tp)]
    n_gt: dict[int, int] = {}
    for (pb, ps, pc), gb, gc in zip(preds, gt_boxes, gt_classes):
        for c in np.unique(np.concatenate([pc, gc])).tolist():
            g, p = gb[gc == c], np.argsort(-ps[pc == c], kind="stable")
            boxes, scores = pb[pc == c][p], ps[pc == c][p]
            n_gt[c] = n_gt.get(c, 0) + len(g)
            used = np.zeros(len(g), bool)
            ious = _iou(boxes, g) if len(g) else np.zeros((len(boxes), 0))
            for j, s in enumerate(scores):
                best = int(ious[j].argmax()) if len(g) else -1
                tp = best >= 0 and ious[j, best] >= iou and not used[best]
                if tp:
                    used[best] = True
                recs.setdefault(c, []).append((float(s), tp))
    allr = [r for v in recs.values() for r in v if r[0] >= threshold]
    tp = sum(t for _, t in allr)
    total = sum(n_gt.values())
    aps = []
    for c, n in n_gt.items():
        if n == 0:
            continue
        r = sorted(recs.get(c, []), key=lambda v: -v[0])
        hits = np.cumsum([t for _, t in r]) if r else np.zeros(0)
        prec = hits / np.arange(1, len(r) + 1)
        rec = hits / n
        mpre = np.maximum.accumulate(prec[::-1])[::-1] if len(r) else prec
        aps.append(float(np.sum(np.diff(np.concatenate([[0.0], rec])) * mpre)))
    return {"precision": float(tp / len(allr)) if allr else 0.0,
            "recall": float(tp / total) if total else 0.0,
            "ap50": float(np.mean(aps)) if aps else 0.0}
