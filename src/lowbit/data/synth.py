"""Synthetic video of objects moving on a ground plane, with exact ground truth.

Geometry (all sizes ``(W, H)``; image points ``(u, v)`` in pixels, continuous, the image spans
``[0, W] x [0, H]``; ground points ``(X, Y)`` in metres, X across, Y away from the camera)::

    image                          ground (seen from above)
    (0,0) ---------- (W,0)         (-far/2, depth) ------- (far/2, depth)     far edge
      |                |              \\                         /
      |                |               \\                       /
    (0,H) ---------- (W,H)           (-near/2, 0) ------ (near/2, 0)          near edge

The homography ``H`` (image -> ground, 3x3, ``[X, Y, 1] ~ H @ [u, v, 1]``) maps the four image
corners to that trapezoid (defaults: near 8 m, far 20 m, depth 30 m).  Image rows are lines of
constant Y; a row's scale ``s`` (pixels per metre across) is ``W / width(Y)``, which falls as
``1 / distance`` (distance = Y + 20 m for the defaults).  An object is at ground point ``p(t)``,
its *foot*; its sprite is drawn with the bottom centre at ``H^-1 p(t)`` and its larger side
``size_m * s`` pixels, so both its apparent size and its apparent speed shrink with depth.

Motion: each object moves along a straight ground line through a point ``P`` it passes at time
``tc``: ``p(t) = P + d * (v tau + a tau^2 / 2)`` with ``tau = t - tc``, unit direction ``d``,
speed ``v`` (1-8 m/s) and acceleration ``a`` (0 for constant-velocity objects); the true speed
is ``v + a tau`` (kept >= 0.5 m/s over the video).  Frame ``i`` is at
``t_i = i / fps + jitter`` (uniform, +-10% of a frame period, ``t_0 = 0``).  Objects are drawn
far to near (larger Y first), so nearer ones occlude; objects enter and leave the frame.

:func:`make_video` writes ``video.mp4``, a YOLO data set (``images/train``, ``labels/train``,
``data.yaml``), ``gt.txt`` (MOTChallenge ``frame,id,x,y,w,h,1,class,visibility``, frame
1-based, exactly the boxes of the YOLO labels), ``calib.json``, ``truth.csv``
(``frame,time,id,class,ground_x,ground_y,speed``, frame 0-based like the image names and
``timestamps.json``; every object with a pixel in the frame), ``timestamps.json`` and
``meta.json``.  A label box is the tight box of an object's *visible* pixels (after occlusion
and clipping, x2/y2 exclusive); objects less than ``min_visibility`` visible or with a side
under ``min_box`` pixels get no label.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fashion
from .detset import atomic_dir
from .idx import DataError
from .yolo import write_data_yaml, write_labels

__all__ = ["DEFAULT_CLASSES", "ground_homography", "homography_from_points",
           "apply_homography", "Mover", "Scene", "make_scene", "make_video", "make_dataset",
           "scene_variation", "synth_command"]

DEFAULT_CLASSES = ("T-shirt/top", "Trouser", "Bag", "Sneaker")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def homography_from_points(src, dst) -> np.ndarray:
    """The 3x3 ``H`` with ``dst ~ H @ src`` from 4 point pairs ``(4, 2)`` (direct solve)."""
    a, b = [], []
    for (x, y), (u, v) in zip(np.asarray(src, float), np.asarray(dst, float)):
        a += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    h = np.linalg.solve(np.array(a), np.array(b))
    return np.append(h, 1.0).reshape(3, 3)


def apply_homography(h: np.ndarray, pts) -> np.ndarray:
    """Map points ``(n, 2)`` (or one ``(2,)``) through ``h``; same shape back, float64."""
    p = np.asarray(pts, np.float64)
    q = np.c_[p.reshape(-1, 2), np.ones(p.size // 2)] @ np.asarray(h, np.float64).T
    return (q[:, :2] / q[:, 2:]).reshape(p.shape)


def ground_homography(size, near: float = 8.0, far: float = 20.0, depth: float = 30.0):
    """``(H, image_points (4, 2), ground_points (4, 2))``: image corners -> the trapezoid."""
    w, h = size
    img = np.array([[0, h], [w, h], [w, 0], [0, 0]], float)
    gnd = np.array([[-near / 2, 0], [near / 2, 0], [far / 2, depth], [-far / 2, depth]], float)
    return homography_from_points(img, gnd), img, gnd


@dataclass
class Mover:
    """One object: its sprite (float32 intensity ``(h, w)`` in 0..1 and bool mask), colour
    (RGB 0..255), larger side ``size_m`` metres, and motion (module doc)."""

    id: int
    cls: int
    sprite: np.ndarray
    mask: np.ndarray
    colour: np.ndarray
    size_m: float
    centre: np.ndarray
    direction: np.ndarray
    speed0: float
    accel: float
    tc: float
    source: str = ""

    def position(self, t: float) -> np.ndarray:
        tau = t - self.tc
        return self.centre + self.direction * (self.speed0 * tau + 0.5 * self.accel * tau * tau)

    def speed(self, t: float) -> float:
        return self.speed0 + self.accel * (t - self.tc)

    def describe(self, names) -> dict:
        r = lambda a: [round(float(x), 6) for x in a]  # noqa: E731
        return {"id": self.id, "class": self.cls, "class_name": names[self.cls],
                "source": self.source, "size_m": round(self.size_m, 6), "colour": r(self.colour),
                "centre": r(self.centre), "direction": r(self.direction),
                "speed": round(self.speed0, 6), "accel": round(self.accel, 6),
                "tc": round(self.tc, 6), "constant_velocity": self.accel == 0.0}


def _shape(kind: int, rng) -> np.ndarray:
    """A procedural 28x28 sprite (0 outside), cycling T-shirt, trousers, bag, sneaker,
    ellipse, diamond; textured by a vertical gradient and speckle."""
    y, x = np.mgrid[0:28, 0:28]
    box = lambda y0, y1, x0, x1: (y >= y0) & (y < y1) & (x >= x0) & (x < x1)  # noqa: E731
    ring = (np.hypot(x - 14, y - 10) < 7) & (np.hypot(x - 14, y - 10) >= 4.5) & (y < 10)
    m = [box(6, 26, 8, 20) | box(4, 11, 2, 26),
         box(2, 7, 7, 21) | box(2, 27, 7, 13) | box(2, 27, 15, 21),
         box(10, 26, 4, 24) | ring,
         box(14, 24, 2, 26) & (y >= 20 - (x - 2) * 0.5),
         ((x - 14) / 11) ** 2 + ((y - 14) / 8) ** 2 <= 1,
         np.abs(x - 14) + np.abs(y - 14) <= 11][kind % 6]
    return np.where(m, 0.6 + 0.3 * y / 27 + rng.uniform(0, 0.1, (28, 28)), 0).astype(np.float32)


def _sprite_images(names, sprites: str, rng, n: int):
    """``n`` pairs ``(class, image 28x28 float 0..1, source)`` cycling over the classes."""
    use_fashion = sprites == "fashion" or (sprites == "auto" and all(
        c in fashion.CLASSES for c in names))
    pool = None
    if sprites == "fashion" and not all(c in fashion.CLASSES for c in names):
        raise ValueError(f"classes: sprites='fashion' needs Fashion-MNIST class names "
                         f"({', '.join(fashion.CLASSES)}), got {', '.join(names)}")
    if use_fashion:
        try:
            pool = fashion.load("test")
        except DataError:
            if sprites == "fashion":
                raise
    out = []
    for k in range(n):
        c = int(rng.integers(len(names))) if k >= 2 else k % len(names)
        if pool is not None:
            idx = np.flatnonzero(pool[1] == fashion.CLASSES.index(names[c]))
            j = int(rng.choice(idx))
            out.append((c, pool[0][j].astype(np.float32) / 255, f"fashion-mnist test[{j}]"))
        else:
            out.append((c, _shape(c, rng), "shape"))
    return out


def _motion(rng, k: int, duration: float, near: float, far: float, depth: float, first):
    """Centre, direction, speed, acceleration and tc of object ``k`` (objects 0 and 1 cross
    at the same point and time, one along the road and one across it)."""
    if k == 1 and first is not None:
        centre, tc = first[0], first[4]
    else:
        yc = rng.uniform(0.12, 0.8) * depth
        half = (near + (far - near) * yc / depth) / 2
        centre, tc = np.array([rng.uniform(-0.6, 0.6) * half, yc]), rng.uniform(-1, duration + 1)
        if k == 0:
            tc = duration / 2
    kind = k % 2 if k < 2 else int(rng.integers(3))
    theta = {0: math.pi / 2, 1: 0.0, 2: math.pi / 4}[kind] + rng.uniform(-0.25, 0.25)
    theta += math.pi * int(rng.integers(2))
    d = np.array([math.cos(theta), math.sin(theta)])
    v = float(rng.uniform(1.0, 8.0) if kind != 1 else rng.uniform(1.0, 4.0))
    a = 0.0
    if k >= 2 and rng.random() < 0.4:
        tmin, tmax = -tc - 0.5, duration - tc + 0.5  # tau over the video, with a margin
        hi = (v - 0.5) / -tmin if tmin < 0 else 1.5
        lo = -(v - 0.5) / tmax if tmax > 0 else -1.5
        a = float(np.clip(rng.uniform(-1.5, 1.5), lo, hi)) or 0.5 * hi
    return centre, d, v, a, float(tc)


def _crop(img: np.ndarray):
    """Tight crop of a 28x28 sprite to its nonzero (>= 10/255) pixels: (intensity, mask)."""
    mask = img >= 10 / 255
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    sl = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return img[sl].copy(), mask[sl].copy()


def _background(rng, size, channels_tint: np.ndarray) -> np.ndarray:
    """Smooth random texture (octaves of upsampled noise) + vertical gradient, float32
    ``(H, W, 3)`` in 0..255."""
    import cv2
    w, h = size
    tex = np.zeros((h, w), np.float32)
    for cell, amp in ((32, 18.0), (12, 10.0), (4, 5.0)):
        small = rng.normal(0, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
        tex += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    grad = np.linspace(-25, 25, h, dtype=np.float32)[:, None]
    base = 115 + tex + grad
    return np.clip(base[..., None] * channels_tint[None, None], 0, 255).astype(np.float32)


@dataclass
class Scene:
    """Everything needed to render any frame independently: ``render(i)``."""

    size: tuple
    fps: float
    names: tuple
    homography: np.ndarray
    image_points: np.ndarray
    ground_points: np.ndarray
    background: np.ndarray
    timestamps: np.ndarray
    movers: list
    channels: int = 3
    noise: float = 3.0
    blur: float = 0.6
    lighting: float = 0.15
    seed: int = 0
    min_visibility: float = 0.3
    min_box: int = 4
    options: dict = field(default_factory=dict)

    def scale(self, foot: np.ndarray) -> float:
        """Pixels per metre across at image point ``foot``: ``1 / |H(u+.5, v) - H(u-.5, v)|``."""
        g = apply_homography(self.homography, [[foot[0] - 0.5, foot[1]],
                                               [foot[0] + 0.5, foot[1]]])
        return 1.0 / float(np.linalg.norm(g[1] - g[0]))

    def _place(self, m: Mover, t: float):
        """``(x0, y0, intensity, mask)`` of ``m`` at time ``t``, or None if not drawable."""
        import cv2
        g = m.position(t)
        depth = self.ground_points[2, 1]
        if not -0.3 * depth < g[1] < 3 * depth:
            return None
        foot = apply_homography(np.linalg.inv(self.homography), g)
        s = self.scale(foot) * m.size_m / max(m.sprite.shape)
        ph, pw = max(1, round(m.sprite.shape[0] * s)), max(1, round(m.sprite.shape[1] * s))
        x0, y0 = round(foot[0] - pw / 2), round(foot[1] - ph)
        w, h = self.size
        if x0 >= w or y0 >= h or x0 + pw <= 0 or y0 + ph <= 0:
            return None
        inten = cv2.resize(m.sprite, (pw, ph), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(m.mask.astype(np.float32), (pw, ph), interpolation=cv2.INTER_LINEAR)
        return x0, y0, inten, mask > 0.5

    def render(self, i: int, objects: bool = True):
        """Frame ``i``: ``(frame, annotations)``; frame uint8 ``(H, W, 3)`` RGB or ``(H, W)``
        gray; one annotation dict per object with a pixel in the frame: ``id, cls, time,
        ground (X, Y), speed, box`` (visible x1, y1, x2, y2 or None), ``visibility``,
        ``labelled``."""
        w, h = self.size
        t = float(self.timestamps[i])
        img = self.background.copy()
        owner = np.full((h, w), -1, np.int32)
        placed = [(m, self._place(m, t)) for m in self.movers] if objects else []
        placed = sorted([p for p in placed if p[1] is not None],
                        key=lambda p: -p[0].position(t)[1])  # far (large Y) first
        full = {}
        for m, (x0, y0, inten, mask) in placed:
            ys, xs = slice(max(y0, 0), min(y0 + mask.shape[0], h)), \
                slice(max(x0, 0), min(x0 + mask.shape[1], w))
            sub = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            if not sub.any():
                continue
            col = m.colour[None, None] * (0.45 + 0.55 * inten[ys.start - y0:ys.stop - y0,
                                                               xs.start - x0:xs.stop - x0, None])
            img[ys, xs][sub] = col[sub]
            owner[ys, xs][sub] = m.id
            full[m.id] = (m, int(mask.sum()), ys, xs)
        return self._finish(img, i, t), self._annotate(owner, full, t)

    def _finish(self, img: np.ndarray, i: int, t: float) -> np.ndarray:
        """Lighting gain, gray conversion, blur and per-frame noise; uint8 out."""
        import cv2
        gain = 1.0 + self.lighting * math.sin(2 * math.pi * t / 7.0 + self.seed % 7)
        img = img * np.float32(gain)
        if self.channels == 1:
            img = img @ _LUMA
        if self.blur > 0:
            img = cv2.GaussianBlur(img, (0, 0), self.blur)
        if self.noise > 0:
            rng = np.random.default_rng([self.seed, 1, i])
            img = img + rng.normal(0, self.noise, img.shape).astype(np.float32)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def _annotate(self, owner: np.ndarray, full: dict, t: float) -> list[dict]:
        out = []
        for mid, (m, area, ys, xs) in sorted(full.items()):
            vis = owner[ys, xs] == mid
            n = int(vis.sum())
            box = None
            if n:
                r, c = np.flatnonzero(vis.any(1)), np.flatnonzero(vis.any(0))
                box = (xs.start + c[0], ys.start + r[0], xs.start + c[-1] + 1,
                       ys.start + r[-1] + 1)
            ok = (box is not None and n / area >= self.min_visibility
                  and box[2] - box[0] >= self.min_box and box[3] - box[1] >= self.min_box)
            g = m.position(t)
            out.append({"id": mid, "cls": m.cls, "time": t, "ground": (float(g[0]), float(g[1])),
                        "speed": m.speed(t), "box": box, "visibility": n / area,
                        "labelled": bool(ok)})
        return out


def _check(frames, size, fps, channels, classes, objects, val_fraction):
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames: expected an integer >= 1, got {frames!r}")
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"size: expected (W, H) each >= 32, got {size}")
    if not fps > 0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes: expected distinct class names, got {classes}")
    if objects is not None and objects < 0:
        raise ValueError(f"objects: expected >= 0, got {objects}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction: expected 0 <= f < 1, got {val_fraction}")


def make_scene(frames: int = 300, seed: int = 0, size=(160, 120), fps: float = 30.0,
               classes=None, *, channels: int = 3, objects: int | None = None,
               noise: float = 3.0, blur: float = 0.6, lighting: float = 0.15,
               jitter: float = 0.1, sprites: str = "auto", ground=(8.0, 20.0, 30.0),
               min_visibility: float = 0.3, min_box: int = 4) -> Scene:
    """Build the scene of :func:`make_video` (same arguments) without writing anything."""
    names = tuple(fashion.CLASSES[c] if isinstance(c, int) else str(c)
                  for c in (classes or DEFAULT_CLASSES))
    size = (int(size[0]), int(size[1]))
    _check(frames, size, fps, channels, names, objects, 0)
    if sprites not in ("auto", "fashion", "shapes"):
        raise ValueError(f"sprites: expected auto, fashion or shapes, got {sprites!r}")
    duration = frames / fps
    n = max(3, round(2 + duration)) if objects is None else objects
    jit = np.random.default_rng([seed, 2]).uniform(-jitter, jitter, frames) / fps
    jit[0] = 0.0
    stamps = np.arange(frames) / fps + jit
    hmat, img_pts, gnd_pts = ground_homography(size, *ground)
    rng = np.random.default_rng([seed, 3])
    movers, first = [], None
    for k, (c, im, src) in enumerate(_sprite_images(names, sprites, rng, n)):
        motion = _motion(rng, k, duration, *ground, first)
        first = first or motion
        inten, mask = _crop(im)
        colour = rng.uniform(20, 255, 3) * rng.uniform(0.5, 1.0)
        movers.append(Mover(k + 1, c, inten, mask, colour.astype(np.float32),
                            float(rng.uniform(1.5, 3.0)), *motion, source=src))
    tint = np.random.default_rng([seed, 4]).uniform(0.85, 1.1, 3).astype(np.float32)
    bg = _background(np.random.default_rng([seed, 5]), size, tint)
    opts = {"noise": noise, "blur": blur, "lighting": lighting, "jitter": jitter,
            "sprites": sprites, "ground_m": {"near": ground[0], "far": ground[1],
                                             "depth": ground[2]}}
    return Scene(size, float(fps), names, hmat, img_pts, gnd_pts, bg, stamps, movers, channels,
                 noise, blur, lighting, seed, min_visibility, min_box, opts)


def _write_frames(scene: Scene, root: Path, n_train: int, progress: bool):
    """Images, labels and video; returns (gt lines, truth rows, number of boxes)."""
    import cv2
    from tqdm import tqdm
    from .video import VideoWriter
    gt, truth, boxes = [], [], 0
    w, h = scene.size
    with VideoWriter(root / "video.mp4", scene.fps, scene.size) as vw:
        for i in tqdm(range(len(scene.timestamps)), desc="synth", unit="frame", leave=False,
                      file=sys.stderr, disable=None if progress else True):
            split = "train" if i < n_train else "val"
            frame, ann = scene.render(i)
            bgr = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(root / "images" / split / f"{i:06d}.png"), bgr)
            vw.write(frame)
            lab = [a for a in ann if a["labelled"]]
            write_labels(root / "labels" / split / f"{i:06d}.txt", [a["box"] for a in lab],
                         [a["cls"] for a in lab], (w, h))
            boxes += len(lab)
            for a in lab:
                x1, y1, x2, y2 = a["box"]
                gt.append(f"{i + 1},{a['id']},{x1},{y1},{x2 - x1},{y2 - y1},1,{a['cls']},"
                          f"{a['visibility']:.4f}\n")
            truth += [f"{i},{a['time']:.9f},{a['id']},{a['cls']},{a['ground'][0]:.9f},"
                      f"{a['ground'][1]:.9f},{a['speed']:.9f}\n" for a in ann]
    return gt, truth, boxes


def make_video(out_dir, frames: int = 300, seed: int = 0, size=(160, 120), fps: float = 30.0,
               classes=None, *, overwrite: bool = False, val_fraction: float = 0.0,
               progress: bool = True, **scene_options) -> dict:
    """Render and write a synthetic video data set into ``out_dir`` (module doc for the files).

    ``classes``: Fashion-MNIST class names or indices (default T-shirt/top, Trouser, Bag,
    Sneaker); other names need ``sprites="shapes"``.  ``scene_options`` (see
    :func:`make_scene`): ``channels`` 1 or 3, ``objects`` (count; default 2 + seconds),
    ``noise`` (pixel sigma), ``blur`` (Gaussian sigma), ``lighting`` (gain amplitude; 0 each
    disables), ``jitter`` (of the frame period), ``sprites`` auto|fashion|shapes, ``ground``
    (near width, far width, depth in m), ``min_visibility``, ``min_box``.  ``val_fraction``
    puts the last frames in ``images/val`` (else ``val`` is the train folder).  The folder is
    written whole (temp folder renamed at the end); a non-empty ``out_dir`` is refused unless
    ``overwrite``.  Returns ``{"out", "frames", "objects", "boxes", "seconds"}``."""
    start = time.perf_counter()
    scene = make_scene(frames, seed, size, fps, classes, **scene_options)
    _check(frames, scene.size, fps, scene.channels, scene.names, 0, val_fraction)
    n_train = frames - int(round(frames * val_fraction))
    with atomic_dir(out_dir, overwrite) as root:
        for sub in ("images", "labels"):
            for split in ("train", "val") if n_train < frames else ("train",):
                (root / sub / split).mkdir(parents=True)
        gt, truth, boxes = _write_frames(scene, root, n_train, progress)
        (root / "gt.txt").write_text("".join(gt))
        (root / "truth.csv").write_text("frame,time,id,class,ground_x,ground_y,speed\n"
                                        + "".join(truth))
        (root / "timestamps.json").write_text(json.dumps([round(float(t), 9)
                                                          for t in scene.timestamps]))
        (root / "calib.json").write_text(json.dumps({
            "homography": scene.homography.tolist(), "image_points":
            scene.image_points.tolist(), "ground_points": scene.ground_points.tolist(),
            "units": "m"}, indent=1))
        meta = {"seed": seed, "size": list(scene.size), "fps": scene.fps, "frames": frames,
                "channels": scene.channels, "classes": list(scene.names),
                "frame_base": {"gt.txt": 1, "truth.csv": 0, "images": 0},
                "min_visibility": scene.min_visibility, "min_box": scene.min_box,
                "options": scene.options,
                "sprites": [m.describe(scene.names) for m in scene.movers]}
        (root / "meta.json").write_text(json.dumps(meta, indent=1))
        write_data_yaml(root, scene.names, val="images/val" if n_train < frames else None,
                        path=Path(out_dir), comment=f"lowbit synthetic video, seed {seed}")
    return {"out": Path(out_dir), "frames": frames, "objects": len(scene.movers),
            "boxes": boxes, "seconds": time.perf_counter() - start}


def scene_variation(seed: int, frames: int, fps: float) -> dict:
    """The per-video conditions :func:`make_dataset` draws with ``vary`` (a pure function of
    ``seed``): pixel noise sigma 1-5, blur sigma 0.3-1.0, lighting amplitude 0-0.3 and an
    object count between the default (2 + seconds, at least 3) and twice it."""
    rng = np.random.default_rng([seed, 7])
    n = max(3, round(2 + frames / fps))
    return {"noise": round(float(rng.uniform(1.0, 5.0)), 3),
            "blur": round(float(rng.uniform(0.3, 1.0)), 3),
            "lighting": round(float(rng.uniform(0.0, 0.3)), 3),
            "objects": int(rng.integers(n, 2 * n + 1))}


def make_dataset(out_dir, videos: int = 24, frames: int = 300, seed: int = 0,
                 size=(160, 120), fps: float = 30.0, classes=None, *, every: int = 5,
                 val_videos: int = 2, vary: bool = True, motion: int = 0,
                 overwrite: bool = False, progress: bool = True, **scene_options) -> dict:
    """One YOLO data set from many synthetic videos, for a detector that generalises to scenes
    it has not seen (one video has one background and a dozen sprites; a model trained on it
    learns them, not the task).

    Training images: every ``every``-th frame of ``videos`` videos of ``frames`` frames with
    seeds ``seed .. seed + videos - 1`` (``images/train/s{seed}_{frame}.png``, labels alike);
    validation images (``images/val``): the same from the next ``val_videos`` seeds, so
    validation never sees a training scene.  Evaluate on a video whose seed is outside
    ``seed .. seed + videos + val_videos - 1``.  Each seed has its own background, tint,
    sprites, colours and motions; with ``vary`` also its own noise, blur, lighting amplitude
    and object count (:func:`scene_variation`; explicit ``scene_options`` win).  Labels follow
    :func:`make_video` (visible boxes, ``min_visibility``, ``min_box``).  ``motion`` = k > 0
    also writes each image's earlier frame ``max(i - k, 0)`` in gray under ``motion/<split>/``
    (same name) and ``motion: k`` in ``data.yaml``, for a detector that sees motion
    (:func:`lowbit.data.yolo.load_yolo` appends it as the last channel).  ``meta.json`` lists
    each video's seed, split and options.  The folder is written whole (``overwrite`` as in
    :func:`make_video`).  Returns ``{"out", "train_images", "val_images", "boxes", "videos",
    "seconds"}``."""
    import cv2
    from tqdm import tqdm
    start = time.perf_counter()
    for name, v, lo in (("videos", videos, 1), ("every", every, 1), ("val_videos", val_videos, 0),
                        ("motion", motion, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an integer >= {lo}, got {v!r}")
    seeds = [(seed + k, "train") for k in range(videos)] + \
        [(seed + videos + k, "val") for k in range(val_videos)]
    keep = list(range(0, frames, every))
    info, counts, boxes, names = [], {"train": 0, "val": 0}, 0, None
    with atomic_dir(out_dir, overwrite) as root:
        for split in ("train", "val") if val_videos else ("train",):
            for sub in ("images", "labels") + (("motion",) if motion else ()):
                (root / sub / split).mkdir(parents=True)
        bar = tqdm(total=len(seeds) * len(keep), desc="synth", unit="frame", leave=False,
                   file=sys.stderr, disable=None if progress else True)
        for s, split in seeds:
            opts = {**(scene_variation(s, frames, fps) if vary else {}), **scene_options}
            scene = make_scene(frames, s, size, fps, classes, **opts)
            names = scene.names
            w, h = scene.size
            for i in keep:
                frame, ann = scene.render(i)
                bgr = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                stem = f"s{s}_{i:06d}"
                cv2.imwrite(str(root / "images" / split / f"{stem}.png"), bgr)
                if motion:
                    cv2.imwrite(str(root / "motion" / split / f"{stem}.png"),
                                _gray(scene.render(max(i - motion, 0), True)[0]))
                lab = [a for a in ann if a["labelled"]]
                write_labels(root / "labels" / split / f"{stem}.txt", [a["box"] for a in lab],
                             [a["cls"] for a in lab], (w, h))
                boxes += len(lab)
                counts[split] += 1
                bar.update(1)
            info.append({"seed": s, "split": split, "objects": len(scene.movers),
                         **{k: opts[k] for k in ("noise", "blur", "lighting") if k in opts}})
        bar.close()
        meta = {"kind": "lowbit synthetic data set", "seeds": [seed, seed + len(seeds) - 1],
                "size": list(size), "fps": fps, "frames": frames, "every": every,
                "classes": list(names), "vary": vary, "motion": motion, "videos": info}
        (root / "meta.json").write_text(json.dumps(meta, indent=1))
        write_data_yaml(root, names, val="images/val" if val_videos else None,
                        path=Path(out_dir), motion=motion, comment=f"lowbit synthetic data set, seeds {seed}.."
                        f"{seed + len(seeds) - 1} ({videos} train, {val_videos} val videos)")
    return {"out": Path(out_dir), "train_images": counts["train"],
            "val_images": counts["val"], "boxes": boxes, "videos": len(seeds),
            "seconds": time.perf_counter() - start}


def _gray(frame: np.ndarray) -> np.ndarray:
    """A rendered frame in gray (OpenCV's RGB -> gray, as the pipeline converts video frames)."""
    import cv2
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"size: expected WxH such as 160x120, got {size!r}")
        return int(parts[0]), int(parts[1])
    return int(size[0]), int(size[1])


def synth_command(out, frames: int = 300, seed: int = 0, size=(160, 120), fps: float = 30.0,
                  *, channels: int = 3, classes=None, objects: int | None = None,
                  static: bool = False, val_fraction: float = 0.0, sprites: str = "auto",
                  overwrite: bool = False, progress: bool = True, videos: int | None = None,
                  every: int = 5, val_videos: int = 2, motion: int = 0) -> int:
    """``lowbit detect synth``: one result line on stdout, 0; a user error is one
    ``lowbit detect synth: error: ...`` line on stderr and 2.  ``classes`` may be a
    comma-separated string, ``size`` a ``WxH`` string; ``static`` turns off lighting change,
    noise and blur.  ``videos``: write a multi-video training set (:func:`make_dataset`:
    ``videos`` training seeds from ``seed``, ``val_videos`` validation seeds after them, every
    ``every``-th frame; ``motion``: earlier frames too) instead of one video."""
    try:
        if motion and videos is None:
            raise ValueError("--motion: only with --videos (a data set of many videos)")
        if isinstance(classes, str):
            classes = [c.strip() for c in classes.split(",") if c.strip()]
        extra = {"noise": 0.0, "blur": 0.0, "lighting": 0.0} if static else {}
        if videos is not None:
            if objects is not None:
                extra["objects"] = objects
            r = make_dataset(out, videos, frames, seed, _parse_size(size), fps, classes,
                             every=every, val_videos=val_videos, vary=not static, motion=motion,
                             channels=channels, sprites=sprites, overwrite=overwrite,
                             progress=progress, **extra)
            print(f"wrote {r['train_images']} training and {r['val_images']} validation images "
                  f"({r['boxes']} boxes) of {r['videos']} videos, seeds {seed}.."
                  f"{seed + r['videos'] - 1}, to {r['out']} in {r['seconds']:.1f} s")
            return 0
        r = make_video(out, frames, seed, _parse_size(size), fps, classes, channels=channels,
                       objects=objects, val_fraction=val_fraction, sprites=sprites,
                       overwrite=overwrite, progress=progress, **extra)
    except (ValueError, FileExistsError, OSError) as e:
        print(f"lowbit detect synth: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {r['frames']} frames, {r['objects']} objects, {r['boxes']} boxes to "
          f"{r['out']} in {r['seconds']:.1f} s")
    return 0
