"""Augmentation of a detection batch and its boxes together (``lowbit detect train``):
horizontal flips, zooms about the centre, translations and photometric changes, applied to a
normalised batch (B, C, H, W) on its device; and JPEG compression (:func:`jpeg_batch`),
applied to the uint8 pixels before they are normalised.  The draws (which image flips, by how much it
moves...) are made by the caller as a pure function of (seed, epoch), so a resumed run
repeats them exactly; these functions only apply them.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["augment_batch", "jpeg_batch", "JPEG_QUALITY"]

# the range a ``jpeg`` draw takes its quality from (OpenCV / libjpeg scale, 4:2:0 chroma)
JPEG_QUALITY = (40, 95)


def _keep_half(b: np.ndarray, W: int, H: int) -> np.ndarray:
    """Boxes ``b`` (k, 4) clipped to the image; one with less than half of it left inside
    becomes an all-zero box (no area: no target)."""
    c = np.clip(b, 0, [W, H, W, H]).astype(np.float32)
    area = lambda v: (v[:, 2] - v[:, 0]) * (v[:, 3] - v[:, 1])  # noqa: E731
    return np.where((area(c) >= 0.5 * area(b))[:, None], c, 0 * c)


def _zoom(x: torch.Tensor, boxes: list, zooms: np.ndarray) -> tuple[torch.Tensor, list]:
    """Scale each image (B, C, H, W) by ``zooms`` (B,) about its centre (bilinear; uncovered
    pixels 0, the channel mean) and its boxes alike: ``u' = (u - W/2) z + W/2``."""
    import torch.nn.functional as F
    B, _, H, W = x.shape
    z = torch.from_numpy(np.asarray(zooms, np.float32)).to(x.device)
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / z               # output -> input, normalised coords
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    centre = np.array([W / 2, H / 2, W / 2, H / 2], np.float32)
    out = [_keep_half((b - centre) * np.float32(zf) + centre, W, H) if len(b) else b
           for b, zf in zip(boxes, zooms)]
    return y, out


def jpeg_batch(pixels: torch.Tensor, quality) -> torch.Tensor:
    """uint8 images ``pixels`` (B, C, H, W) with image ``i`` round-tripped through JPEG at
    ``quality[i]`` (1..100; 0 leaves it as it is): the block (DCT) and chroma (4:2:0)
    artefacts of a compressed camera stream (H.264, MJPEG), which a model trained on lossless
    frames has never seen.  Three channels are coded as one RGB image; otherwise each
    channel as a gray image, except that a fourth channel after RGB (motion data's earlier
    frame) is coded gray beside them."""
    import cv2
    q = np.asarray(quality).reshape(-1)
    if len(q) != pixels.shape[0]:
        raise ValueError(f"jpeg_batch: {len(q)} qualities for {pixels.shape[0]} images")
    if not q.any():
        return pixels
    x = pixels.cpu().numpy().copy()                         # (B, C, H, W) uint8
    C = x.shape[1]

    def trip(img, qi):                                      # (H, W) or (H, W, 3) BGR
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(qi)])
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)

    for i in np.flatnonzero(q):
        if C in (3, 4):
            rgb = np.ascontiguousarray(x[i, 2::-1].transpose(1, 2, 0))   # BGR (H, W, 3)
            x[i, :3] = trip(rgb, q[i]).transpose(2, 0, 1)[::-1]
            rest = range(3, C)
        else:
            rest = range(C)
        for c in rest:
            x[i, c] = trip(np.ascontiguousarray(x[i, c]), q[i])
    return torch.from_numpy(x).to(pixels.device)


def _photometric(x: torch.Tensor, contrast, brightness, noise, rng) -> torch.Tensor:
    """``x * contrast + brightness + noise * N(0, 1)`` on a normalised batch: contrast (B,),
    brightness (B, C) and noise sigma (B,) in units of the channel's standard deviation; the
    normal draws come from ``rng`` (numpy, so a run is reproducible and resumes exactly)."""
    B, C = x.shape[:2]
    dev = x.device
    c = torch.from_numpy(np.asarray(contrast, np.float32)).to(dev).view(B, 1, 1, 1)
    b = torch.from_numpy(np.asarray(brightness, np.float32)).to(dev).view(B, C, 1, 1)
    y = x * c + b
    if noise is not None and np.any(noise):
        n = torch.from_numpy(rng.standard_normal(tuple(x.shape), dtype=np.float32)).to(dev)
        y = y + n * torch.from_numpy(np.asarray(noise, np.float32)).to(dev).view(B, 1, 1, 1)
    return y


def augment_batch(x: torch.Tensor, boxes: list, flips, shifts, zooms=None,
             photo=None) -> tuple[torch.Tensor, list]:
    """Horizontal flips (bool (B,) or None), zooms about the centre (float (B,) or None,
    :func:`_zoom`), translations (int (B, 2) pixels dx, dy, or None) and photometric changes
    (``photo`` = (contrast (B,), brightness (B, C), noise sigma (B,), numpy rng) or None,
    :func:`_photometric`) of a normalised batch (B, C, H, W) and its boxes, in that order.
    Uncovered pixels get 0 (the channel mean); a box keeps its clipped part when that is at
    least half of it."""
    B, _, H, W = x.shape
    boxes = [b.copy() for b in boxes]
    if flips is not None and flips.any():
        x = torch.where(torch.from_numpy(flips).to(x.device)[:, None, None, None], x.flip(-1), x)
        for i in np.flatnonzero(flips):
            boxes[i] = np.stack([W - boxes[i][:, 2], boxes[i][:, 1], W - boxes[i][:, 0],
                                 boxes[i][:, 3]], 1)
    if zooms is not None and np.any(zooms != 1):
        x, boxes = _zoom(x, boxes, zooms)
    if photo is not None:
        x = _photometric(x, *photo)
    if shifts is None or not shifts.any():
        return x, boxes
    y = torch.zeros_like(x)
    for i, (dx, dy) in enumerate(shifts.tolist()):
        y[i, :, max(0, dy):H + min(0, dy), max(0, dx):W + min(0, dx)] = \
            x[i, :, max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
        boxes[i] = _keep_half(boxes[i] + np.array([dx, dy, dx, dy], np.float32), W, H)
    return y, boxes
