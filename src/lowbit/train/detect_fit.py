"""Train the CenterNet-style detector of :mod:`lowbit.train.detector` (``lowbit detect train``).

``fit_detector(train, val)`` is :func:`lowbit.train.loop.fit` for detection: seeded; Adam with a
per-step cosine schedule; uint8 images normalised per channel (``Normalization.from_images`` of
the training images, through the same look-up tables as the runtime); cheap augmentation --
horizontal flips (``flip``), zooms in ``[1/(1+scale), 1+scale]`` about the centre, translations
by up to ``shift`` of the image size, boxes moved with the pixels, and photometric changes of
strength ``photometric`` (contrast, brightness per image and channel, Gaussian noise; in
channel-std units), and a JPEG round trip of a share ``jpeg`` of the images at a quality
drawn from ``JPEG_QUALITY`` (the artefacts of compressed video), drawn as a pure function
of (seed, epoch); the
:mod:`lowbit.train.detect_loss` loss (``class_loss``: the weight of its class cross-entropy
term, 0 = off; ``neighbours``: the weight of size and offset regression at the 8 cells around
each centre, 0 = centres only); with ``teacher`` (a trained detector checkpoint of the same classes, stride
and input size, e.g. the float twin) its heatmap is distilled into the student's
(``detect_loss.heatmap_distillation``, weight ``distill``, temperature ``temperature``);
latent weights clipped after every step (``post_step``);
a checkpoint written atomically after every epoch (model, optimizer, schedule, RNG states,
epoch, config with backbone / channels / classes / stride / input shape, normalisation), from
which ``resume=True`` continues exactly; validation loss, precision / recall at IoU 0.5 and
score >= 0.3, and AP@0.5 after each epoch.  ``export_detector`` writes the model file (meta:
task, stride, classes, output names, model spec); ``lowbit.train.detect_command`` reads YOLO
folders and is ``lowbit detect train``.

Data: any object with ``images`` uint8 (N, C, H, W), ``boxes`` (one float (k, 4) x1y1x2y2 pixel
array per image), ``classes`` (one int (k,) array per image) and optionally ``names``, or the
tuple ``(images, boxes, classes)``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lowbit.data import Normalization, batch_order

from .checkpoint import build_model, load_checkpoint, save_checkpoint, set_rng_state
from .dataset import ImageSet
from .detect_augment import JPEG_QUALITY, augment_batch, jpeg_batch
from .detect_loss import (THRESHOLD, TOPK, decode_torch, detection_loss, detection_metrics,
                          make_targets)
from .detector import DETECTOR, detector_spec, out_size
from .distill import Teacher, distill_config
from .export import build_graph, export_model
from .loop import resolve_device, seed_everything
from .optimizers import lr_at, make_optimizer, make_schedule, set_lr

__all__ = ["DEFAULTS", "MODEL_DEFAULTS", "DetectFitResult", "fit_detector", "evaluate_detector",
           "export_detector", "detection_data", "CHECKPOINT", "MODEL_FILE"]

DEFAULTS: dict[str, Any] = {"epochs": 14, "lr": 2e-3, "batch_size": 32, "weight_decay": 0.0,
                            "flip": True, "shift": 0.0, "scale": 0.0, "photometric": 0.3,
                            "jpeg": 0.0, "seed": 0, "optimizer": "adam", "class_loss": 0.0,
                            "neighbours": 0.0,
                            "schedule": "cosine"}
CHECKPOINT, MODEL_FILE = "checkpoint.pt", "detector.lbm"
# the architecture ``detect train`` builds unless told otherwise; build_detector's own defaults
# are the plain layout of lowbit.train.detector's docstring.  Float stem conv + max pool
# (stride 4), one binary block at 48 channels, a downsampling block and three binary blocks at
# 96 channels (stride 8), binary head conv: 145 M MACs at 160x120, 95 % of them binary.  With
# 14 epochs it trains on 960 synthetic videos (11 520 images) in 14 min 37 s on two idle cores;
# width 32 (the demo's, session 6's default) is 0.02-0.03 mAP lower.  Held-out mAP, latency
# and training time in docs/results.md ("Detection and tracking")
MODEL_DEFAULTS: dict[str, Any] = {"width": 48, "stem_pool": True, "blocks": [1, 3],
                                  "head": "quant"}


@dataclass
class DetectFitResult:
    model: nn.Module
    history: list[dict]
    config: dict
    normalization: Normalization
    checkpoint: Path | None


def detection_data(data, what: str) -> SimpleNamespace:
    """(images (N, C, H, W) uint8, boxes, classes, names) from a DetectionSet or a tuple;
    ``what`` names the data in errors."""
    if isinstance(data, (tuple, list)):
        images, boxes, classes = data[:3]
        names, motion = None, 0
    else:
        images, boxes, classes = data.images, data.boxes, data.classes
        names = getattr(data, "names", None)
        motion = getattr(data, "motion", None)
        if motion is None:                      # a DetectionSet: the reader's meta says
            motion = (getattr(data, "meta", None) or {}).get("motion", 0)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{what}: expected uint8 images (N, C, H, W), got {images.dtype} "
                         f"{images.shape}")
    if not (len(boxes) == len(classes) == len(images)) or len(images) == 0:
        raise ValueError(f"{what}: expected one boxes and one classes array per image "
                         f"({len(images)} images, {len(boxes)} boxes, {len(classes)} classes)")
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
    classes = [np.asarray(c, np.int64).reshape(-1) for c in classes]
    if motion and images.shape[1] not in (2, 4):
        raise ValueError(f"{what}: motion data ({motion} frames) needs the image's 1 or 3 "
                         f"channels plus the earlier frame's gray one, got {images.shape[1]}")
    return SimpleNamespace(images=images, boxes=boxes, classes=classes,
                           names=list(names) if names is not None else None, motion=int(motion))


def _targets(d, idx, boxes, grid, stride, k, device, neighbours: float = 0.0) -> dict:
    t = make_targets(boxes, [d.classes[j] for j in idx], k, grid, stride, neighbours=neighbours)
    return {key: torch.from_numpy(v).to(device) for key, v in t.items()}


def evaluate_detector(model: nn.Module, data, normalization: Normalization, stride: int,
                      batch_size: int = 64, threshold: float = THRESHOLD,
                      neighbours: float = 0.0) -> dict[str, float]:
    """``loss`` (with regression weight ``neighbours`` around the centres) and
    :func:`detection_metrics` of ``model`` (eval mode) on ``data``."""
    d = detection_data(data, "validation data")
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    images = ImageSet(d.images, np.zeros(len(d.images), np.int64), normalization, dev)
    grid = out_size(d.images.shape[2:], stride)
    loss, preds = 0.0, []
    with torch.no_grad():
        for s in range(0, len(d.images), batch_size):
            idx = list(range(s, min(s + batch_size, len(d.images))))
            out = model(images.batch(torch.tensor(idx, device=dev))[0])
            t = _targets(d, idx, [d.boxes[j] for j in idx], grid, stride, out[0].shape[1], dev,
                         neighbours)
            loss += float(detection_loss(out, t)[0]) * len(idx)
            preds += decode_torch(*(o.cpu() for o in out), stride, threshold=0.01)
    model.train(was)
    m = detection_metrics(preds, d.boxes, d.classes, threshold)
    return {"loss": loss / len(d.images), **m}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    tmp.replace(path)


def _start(model, d, explicit: dict, ckpt: dict | None, ckpt_path, model_args: dict):
    """(model, config, normalization) of a new run, or of the resumed checkpoint ``ckpt``."""
    if ckpt is None:
        config = {**DEFAULTS, **explicit}
        seed_everything(int(config["seed"]))
        if model is None or isinstance(model, str):
            model = build_model(DETECTOR, **{"backbone": model or "bnn", **model_args,
                                             "in_channels": d.images.shape[1],
                                             "num_classes": _num_classes(d)})
        model.lowbit_spec = detector_spec(model)        # every argument, not only those given
        spec = model.lowbit_spec["kwargs"]
        config.update(backbone=spec["backbone"], in_channels=spec["in_channels"],
                      num_classes=spec["num_classes"], stride=spec["stride"],
                      input_shape=list(d.images.shape[1:]), train_size=len(d.images),
                      motion=d.motion,
                      classes=d.names or [str(i) for i in range(spec["num_classes"])])
        return model, config, Normalization.from_images(d.images)
    config, kwargs = dict(ckpt["config"]), ckpt["model"]["kwargs"]
    if isinstance(model, str):
        explicit = {**explicit, "backbone": model.strip().lower()}
    for key, value in [*explicit.items(), *model_args.items()]:
        saved = kwargs.get(key) if key in model_args else config.get(key)
        if saved != value:
            raise ValueError(f"{ckpt_path}: {key!r}: the run was started with {saved!r}, got "
                             f"{value!r}; a resumed run keeps its settings (use another "
                             f"output folder to change them)")
    if config.get("motion", 0) != d.motion:           # absent in older runs' configs
        raise ValueError(f"{ckpt_path}: the run was started on data with motion "
                         f"{config.get('motion', 0)} (frames), got motion {d.motion}")
    if config["input_shape"] != list(d.images.shape[1:]) or config["train_size"] != len(d.images):
        raise ValueError(f"{ckpt_path}: the run was started on {config['train_size']} images of "
                         f"{config['input_shape']}, got {len(d.images)} of "
                         f"{list(d.images.shape[1:])}")
    if not isinstance(model, nn.Module):
        model = build_model(ckpt["model"]["name"], **kwargs)
    model.load_state_dict(ckpt["model_state"])
    return model, config, Normalization.from_dict(ckpt["normalization"], str(ckpt_path))


def _num_classes(d) -> int:
    top = max((int(c.max()) for c in d.classes if len(c)), default=0) + 1
    return max(top, len(d.names or []))


def _teacher(config: dict, norm: Normalization, dev) -> Teacher | None:
    """The frozen teacher detector of a distillation run, checked against the student."""
    if not config.get("teacher"):
        return None
    path = config["teacher"]
    tutor = Teacher(path, norm, tuple(config["input_shape"]), config["distill"],
                    config["temperature"], dev)
    stride, k = getattr(tutor.model, "stride", None), getattr(tutor.model, "num_classes", None)
    if (stride, k) != (int(config["stride"]), int(config["num_classes"])):
        raise ValueError(f"{path}: teacher: expected a detector of stride {config['stride']} "
                         f"with {config['num_classes']} classes like the student, got "
                         f"{'not a detector' if stride is None else f'stride {stride}, {k} classes'}")
    return tutor


def _epoch(model, opt, sched, d, images, config, epoch, progress, post,
           tutor: Teacher | None = None) -> dict:
    """One training epoch; returns its mean losses."""
    n, bs = len(d.images), int(config["batch_size"])
    steps, seed, stride = math.ceil(n / bs), int(config["seed"]), int(config["stride"])
    grid = out_size(d.images.shape[2:], stride)
    order = batch_order(n, seed, epoch)
    rng = np.random.default_rng([seed, epoch, 1])          # a pure function of (seed, epoch)
    flips = rng.random(n) < 0.5 if config["flip"] else None
    reach = np.round(float(config.get("shift", 0.0)) * np.array(d.images.shape[:1:-1]))
    reach = reach.astype(np.int64)                                          # (W, H) pixels
    shifts = rng.integers(-reach, reach + 1, (n, 2)) if reach.any() else None    # (n, 2)
    rng2 = np.random.default_rng([seed, epoch, 2])        # zoom / photometric (added later)
    zs = float(config.get("scale", 0.0))
    zooms = np.exp(rng2.uniform(-math.log1p(zs), math.log1p(zs), n)) if zs > 0 else None
    ps, nc = float(config.get("photometric", 0.0)), d.images.shape[1]
    if ps > 0:
        contrast = rng2.uniform(1 - ps, 1 + ps, n)
        brightness = rng2.uniform(-ps, ps, (n, 1)) + rng2.uniform(-ps / 3, ps / 3, (n, nc))
        noise = rng2.uniform(0, ps / 3, n)
        if config.get("motion", 0):     # the earlier frame: the same light as the image's
            brightness[:, -1] = brightness[:, :-1].mean(1)
    share = float(config.get("jpeg", 0.0))                 # absent in older runs' configs
    rng3 = np.random.default_rng([seed, epoch, 4])
    quality = (np.where(rng3.random(n) < share, rng3.integers(JPEG_QUALITY[0],
                                                              JPEG_QUALITY[1] + 1, n), 0)
               if share > 0 else None)                                     # (n,) 0: none
    dev = images.device
    sums = {"loss": 0.0, "heatmap": 0.0, "size": 0.0, "offset": 0.0}
    class_weight = float(config.get("class_loss", 0.0))     # absent in older runs' configs
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config['epochs']}", unit="batch",
               disable=None if progress else True, leave=False, dynamic_ncols=True, file=sys.stderr)
    for i in bar:
        lr = lr_at(sched, epoch * steps + i)
        set_lr(opt, lr)
        idx = order[i * bs:(i + 1) * bs]
        pixels = images.images[torch.from_numpy(idx).to(dev)]            # (B, C, H, W) uint8
        if quality is not None:
            pixels = jpeg_batch(pixels, quality[idx])
        x = images.normalise(pixels)                                       # float32
        photo = (contrast[idx], brightness[idx], noise[idx],
                 np.random.default_rng([seed, epoch, 3, i])) if ps > 0 else None
        x, boxes = augment_batch(x, [d.boxes[j] for j in idx], None if flips is None else flips[idx],
                            None if shifts is None else shifts[idx],
                            None if zooms is None else zooms[idx], photo)
        t = _targets(d, idx, boxes, grid, stride, int(config["num_classes"]), dev,
                     float(config.get("neighbours", 0.0)))      # absent in older configs
        kd = {} if tutor is None else {"teacher_heatmap": tutor.logits(x)[0],
                                       "distill": tutor.alpha,
                                       "temperature": tutor.temperature}
        loss, parts = detection_loss(model(x), t, class_weight=class_weight, **kd)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for m in post:
                m.post_step()
        sums["loss"] += float(loss.detach()) * len(idx)
        for key, v in parts.items():
            sums[key] = sums.get(key, 0.0) + v * len(idx)
        if progress and (i % 10 == 0 or i == steps - 1):
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.2e}")
    bar.close()
    rec = {"epoch": epoch + 1, "lr": lr}
    rec.update({f"train_{k}": v / n for k, v in sums.items()})
    if not math.isfinite(rec["train_loss"]):
        raise FloatingPointError(f"epoch {epoch + 1}: training loss is {rec['train_loss']}; "
                                 f"the run diverged (try a lower lr)")
    return rec


def fit_detector(train, val=None, *, model: str | nn.Module | None = None,
                 model_args: dict | None = None, epochs: int | None = None,
                 lr: float | None = None, batch_size: int | None = None,
                 weight_decay: float | None = None, flip: bool | None = None,
                 shift: float | None = None, scale: float | None = None,
                 photometric: float | None = None, jpeg: float | None = None,
                 seed: int | None = None, class_loss: float | None = None, neighbours: float | None = None,
                 teacher: str | Path | None = None,
                 distill: float | None = None, temperature: float | None = None,
                 out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False, threads: int | None = None,
                 device: str = "cpu", progress: bool = True,
                 on_epoch_end: Callable[[dict], None] | None = None) -> DetectFitResult:
    """Train a detector on ``train`` (module docstring), validating on ``val`` after each epoch.

    ``model``: a backbone name for :func:`lowbit.train.detector.build_detector` (None: "bnn";
    built after seeding with ``model_args`` such as width / stride / blocks; channels and
    classes come from the data) or a model it built.  Settings left None take
    :data:`DEFAULTS` (on resume: the run's own; a different explicit value is an error).
    With ``out_dir`` a checkpoint is written there after every epoch; an existing one is an
    error unless ``resume`` (continue it exactly) or ``overwrite``.  ``teacher`` /
    ``distill`` (default 0.5) / ``temperature`` (default 1): knowledge distillation from a
    trained detector's heatmap (module docstring).  ``on_epoch_end(record)`` runs after each
    checkpoint."""
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    d = detection_data(train, "training data")
    v = detection_data(val, "validation data") if val is not None else None
    if v is not None and v.images.shape[1:] != d.images.shape[1:]:
        raise ValueError(f"validation data: expected images (C, H, W) = {d.images.shape[1:]} "
                         f"like the training images, got {v.images.shape[1:]}")
    if v is not None and v.motion != d.motion:
        raise ValueError(f"validation data: motion {v.motion} (frames), but the training "
                         f"data's is {d.motion}")
    if shift is not None and not 0 <= shift < 0.5:
        raise ValueError(f"shift: expected a fraction of the image size in [0, 0.5), got "
                         f"{shift!r}")
    if scale is not None and not 0 <= scale <= 1:
        raise ValueError(f"scale: expected a zoom range in [0, 1] (zoom in [1/(1+s), 1+s]), "
                         f"got {scale!r}")
    if class_loss is not None and not (math.isfinite(class_loss) and class_loss >= 0):
        raise ValueError(f"class_loss: expected a weight >= 0, got {class_loss!r}")
    if neighbours is not None and not (math.isfinite(neighbours) and neighbours >= 0):
        raise ValueError(f"neighbours: expected a weight >= 0, got {neighbours!r}")
    if photometric is not None and not 0 <= photometric < 1:
        raise ValueError(f"photometric: expected a strength in [0, 1), got {photometric!r}")
    if jpeg is not None and not 0 <= jpeg <= 1:
        raise ValueError(f"jpeg: expected the share of images to compress, in [0, 1], got "
                         f"{jpeg!r}")
    explicit = {k: x for k, x in dict(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                      weight_decay=weight_decay, flip=flip, shift=shift,
                                      scale=scale, photometric=photometric, jpeg=jpeg,
                                      class_loss=class_loss, neighbours=neighbours,
                                      **distill_config(teacher, distill, temperature, 1.0)).items()
                if x is not None}
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    ckpt = None
    if ckpt_path is not None and ckpt_path.exists():
        if resume:
            ckpt = load_checkpoint(ckpt_path)
            if not (ckpt.get("optimizer_state") and ckpt.get("rng") and ckpt.get("schedule")):
                raise ValueError(f"{ckpt_path}: not a detector training checkpoint (no "
                                 f"optimizer / schedule / RNG state to resume from)")
        elif not overwrite:
            raise FileExistsError(f"{ckpt_path}: a checkpoint is already there; resume it or "
                                  f"choose another output folder")
    model, config, norm = _start(model, d, explicit, ckpt, ckpt_path, dict(model_args or {}))
    out_size(d.images.shape[2:], int(config["stride"]))           # refuse sizes early
    model.to(dev)
    model.normalization, model.lowbit_input_shape = norm, tuple(config["input_shape"])
    images = ImageSet(d.images, np.zeros(len(d.images), np.int64), norm, dev, "training images")
    steps = math.ceil(len(d.images) / int(config["batch_size"]))
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    sched, history, start = make_schedule(config, steps), [], 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer_state"])
        sched, history, start = ckpt["schedule"], list(ckpt["history"]), int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])
        if progress:
            print(f"resuming {ckpt_path} after epoch {start}/{config['epochs']}", file=sys.stderr)
    post = [m for m in model.modules() if callable(getattr(m, "post_step", None))]
    tutor = _teacher(config, norm, dev)
    for epoch in range(start, int(config["epochs"])):
        model.train()
        t0 = time.perf_counter()
        rec = _epoch(model, opt, sched, d, images, config, epoch, progress, post, tutor)
        if v is not None:
            m = evaluate_detector(model, v, norm, int(config["stride"]),
                                  neighbours=float(config.get("neighbours", 0.0)))
            rec.update({f"val_{k}": x for k, x in m.items()})
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, model, optimizer=opt, schedule=sched, epoch=epoch + 1,
                            config=config, history=history, normalization=norm)
            _write_json(ckpt_path.with_name("history.json"), history)
        if progress:
            val = (f"  val P {rec['val_precision']:.2f} R {rec['val_recall']:.2f} AP50 "
                   f"{rec['val_ap50']:.3f}" if v is not None else "")
            print(f"epoch {epoch + 1}/{config['epochs']}  loss {rec['train_loss']:.4f}{val}  "
                  f"lr {rec['lr']:.2e}  {rec['seconds']:.1f}s", file=sys.stderr)
        if on_epoch_end is not None:
            on_epoch_end(rec)
    return DetectFitResult(model, history, config, norm, ckpt_path)


def export_detector(model: nn.Module, path: str | Path, normalization: Normalization,
                    input_shape, classes, extra: dict | None = None, motion: int = 0) -> int:
    """Write ``model`` as a detector model file for ``lowbit.detect.detector.Detector``:
    ``export_model`` with meta ``task`` = "detect", ``stride``, ``classes``, ``outputs``
    (graph value names of the heatmap, size and offset maps), ``model`` (builder spec),
    ``input_shape``, ``decode`` (the map encodings) and, for a model trained on motion data,
    ``motion`` (its last input channel is the gray frame ``motion`` frames earlier); returns
    the file size."""
    norm = normalization.to_dict() if normalization is not None else None
    graph, _ = build_graph(model, norm, input_shape)             # for the output value names
    meta = {"task": "detect", "stride": int(model.stride), "classes": [str(c) for c in classes],
            "outputs": dict(zip(("heatmap", "size", "offset"), graph["outputs"])),
            "model": detector_spec(model), "input_shape": [int(v) for v in input_shape],
            "decode": {"heatmap": "logits, sigmoid = score", "size": "log(w / stride), "
                       "log(h / stride)", "offset": "(dx, dy) in [0, 1) of the cell",
                       "threshold": THRESHOLD, "topk": TOPK},
            **({"motion": int(motion)} if motion else {}), **(extra or {})}
    return export_model(model, path, norm, meta=meta, input_shape=tuple(input_shape))
