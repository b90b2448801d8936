"""``lowbit detect train``: YOLO folders in (``lowbit.data.yolo.load_yolo``), a trained and
exported detector out (``OUT/checkpoint.pt`` every epoch, ``OUT/history.json``,
``OUT/detector.lbm``), through :func:`lowbit.train.detect_fit.fit_detector`."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .detect_fit import (CHECKPOINT, MODEL_DEFAULTS, MODEL_FILE, detection_data, export_detector,
                         fit_detector)

__all__ = ["load_data", "train_command"]


def _concat(parts: list, what: str):
    """One data set of several (images of one shape, the same class names)."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    shapes = {p.images.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"{what}: the folders' images differ in (C, H, W): {sorted(shapes)}")
    motion = {p.motion for p in parts}
    if len(motion) > 1:
        raise ValueError(f"{what}: the folders' motion (frames, data.yaml) differ: "
                         f"{sorted(motion)}")
    names = {tuple(p.names) for p in parts if p.names}
    if len(names) > 1:
        raise ValueError(f"{what}: the folders' class names differ: {sorted(names)}")
    return SimpleNamespace(images=np.concatenate([p.images for p in parts]),
                           boxes=[b for p in parts for b in p.boxes],
                           classes=[c for p in parts for c in p.classes],
                           names=list(next(iter(names))) if names else None,
                           motion=parts[0].motion)


def load_data(root, val_fraction: float = 0.15):
    """``(train, val)`` of a YOLO folder (``lowbit.data.yolo.load_yolo``): its ``val`` split
    when it has one of its own, else the last ``val_fraction`` of the training images (in file
    order: for video frames a contiguous stretch, not neighbours of training frames).
    ``root`` may also be a list of folders (or a comma-separated string of them): each is
    split so and the parts are joined (same image size and class names)."""
    if isinstance(root, str) and "," in root:
        root = [r for r in root.split(",") if r.strip()]
    if isinstance(root, (list, tuple)):
        if len(root) == 1:
            return load_data(root[0], val_fraction)
        pairs = [load_data(r, val_fraction) for r in root]
        return (_concat([t for t, _ in pairs], "training data"),
                _concat([v for _, v in pairs], "validation data"))
    from lowbit.data import DataError
    from lowbit.data.yolo import load_yolo
    raw = load_yolo(root, "train")
    d = detection_data(raw, f"{root}: train")
    try:
        raw_val = load_yolo(root, "val")
        if tuple(getattr(raw_val, "files", ())) != tuple(getattr(raw, "files", ())) or \
                not getattr(raw, "files", ()):
            return d, detection_data(raw_val, f"{root}: val")
    except (DataError, FileNotFoundError, KeyError, ValueError):
        pass
    n = len(d.images)
    k = int(round(n * val_fraction)) if n > 1 else 0
    if k == 0:
        return d, None
    part = lambda s: SimpleNamespace(images=d.images[s], boxes=d.boxes[s],  # noqa: E731
                                     classes=d.classes[s], names=d.names, motion=d.motion)
    return part(slice(0, n - k)), part(slice(n - k, n))


def train_command(data: str | Path, model: str | None = None, out: str | Path = "runs/detect",
                  epochs: int | None = None, batch_size: int | None = None,
                  lr: float | None = None, width: int | None = None, stride: int | None = None,
                  blocks: int | str | None = None, threads: int | None = None,
                  resume: bool = False, overwrite: bool = False, seed: int | None = None,
                  flip: bool | None = None, shift: float | None = None,
                  scale: float | None = None, photometric: float | None = None,
                  jpeg: float | None = None, head: str | None = None, head_channels: int | None = None,
                  stem_pool: bool | None = None, fpn: bool | None = None,
                  class_loss: float | None = None, neighbours: float | None = None,
                  teacher: str | None = None,
                  distill: float | None = None, temperature: float | None = None,
                  progress: bool = True) -> int:
    """``lowbit detect train``: train a detector on the YOLO folder ``data`` and write
    ``OUT/checkpoint.pt`` (every epoch), ``OUT/history.json`` and ``OUT/detector.lbm``.
    ``model``: backbone (``bnn`` default, ``xnor``, ``bwn``, ``twn``, ``dorefa:W,A,G``,
    ``float``); ``data``: a YOLO folder or a list of them; arguments left None take their
    defaults (:data:`MODEL_DEFAULTS`, :data:`DEFAULTS`) or, with ``resume``, the run's own.
    Returns 0, or 2 after one ``lowbit detect train: error: ...`` line on bad input."""
    from lowbit.cliargs import check_out_dir, fail
    cmd = "detect train"
    for flag, value, lo in (("--epochs", epochs, 1), ("--batch-size", batch_size, 1),
                            ("--width", width, 1), ("--head-channels", head_channels, 0),
                            ("--blocks", None if isinstance(blocks, str) else blocks, 0),
                            ("--threads", threads, 1)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < lo):
            return fail(cmd, f"{flag}: expected an integer >= {lo}, got {value!r}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        return fail(cmd, f"--lr: expected a positive number, got {lr!r}")
    if stride is not None and stride not in (4, 8, 16):
        return fail(cmd, f"--stride: expected 4, 8 or 16, got {stride!r}")
    if resume and overwrite:
        return fail(cmd, "--resume and --overwrite exclude each other")
    if teacher is not None and not Path(teacher).is_file():
        return fail(cmd, f"--teacher {teacher}: no such checkpoint")
    try:
        out_dir = check_out_dir(out)
        if (out_dir / CHECKPOINT).exists() and not (resume or overwrite):
            raise ValueError(f"--out {out}: a checkpoint is already there; pass --resume to "
                             f"continue it or --overwrite to start again")
        train, val = load_data(data)
        args = {k: v for k, v in dict(width=width, stride=stride, blocks=blocks, head=head,
                                      head_channels=head_channels,
                                      stem_pool=stem_pool, fpn=fpn).items() if v is not None}
        if not (resume and (out_dir / CHECKPOINT).exists()):     # a new run
            args = {**MODEL_DEFAULTS, **args}
        res = fit_detector(train, val, model=model, model_args=args, epochs=epochs,
                           lr=lr, batch_size=batch_size, seed=seed, flip=flip, shift=shift,
                           scale=scale, photometric=photometric, jpeg=jpeg,
                           class_loss=class_loss,
                           neighbours=neighbours,
                           teacher=teacher, distill=distill, temperature=temperature,
                           out_dir=out_dir,
                           resume=resume, overwrite=overwrite, threads=threads,
                           progress=progress)
        size = export_detector(res.model, out_dir / MODEL_FILE, res.normalization,
                               res.config["input_shape"], res.config["classes"],
                               motion=res.config.get("motion", 0))
    except (ValueError, OSError, ImportError) as e:
        return fail(cmd, str(e))
    last = res.history[-1] if res.history else {}
    summary = (f"  val P {last['val_precision']:.2f} R {last['val_recall']:.2f} AP50 "
               f"{last['val_ap50']:.3f}" if "val_ap50" in last else "")
    print(f"{out_dir / MODEL_FILE}: {res.config['backbone']} detector, "
          f"{len(res.config['classes'])} class(es), stride {res.config['stride']}, "
          f"{size} bytes{summary}")
    return 0
