"""The training loop: ``fit`` a model on uint8 images, ``evaluate`` its accuracy.

Settings come, lowest priority first, from ``DEFAULTS``, the model's recipe defaults in the
registry (``@register("lenet5", epochs=12, lr=1e-3, ...)``), then the arguments of ``fit``.
Known keys: ``epochs``, ``lr``, ``batch_size``, ``optimizer``, ``schedule``, ``weight_decay``,
``momentum``, ``lr_step``, ``lr_gamma`` (see ``lowbit.train.optimizers``); other keys are kept
in the checkpoint's ``config`` for recipes that want them.

Determinism: ``seed`` seeds python, numpy and torch before the model is built (when ``fit``
builds it from a name) and fixes the data order, which is ``lowbit.data.batch_order(n, seed,
epoch)`` - a pure function, so nothing about it needs saving.  After every epoch the
checkpoint ``out_dir/checkpoint.pt`` is written atomically with model, optimizer, schedule and
all RNG states; ``resume=True`` restores them and continues with the next epoch, giving
bitwise the same weights as a run that was never interrupted (same device and thread count).

Contract with quantized / pruned layers: after every optimizer step ``fit`` calls
``m.post_step()`` (under ``torch.no_grad()``) on each module ``m`` that defines it.
"""
from __future__ import annotations

import inspect
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lowbit.data import Normalization, batch_order

from . import distributed, registry
from .augment import Augment
from .checkpoint import (build_model, load_checkpoint, model_spec, save_checkpoint,
                         set_rng_state)
from .dataset import ImageSet, check_arrays
from .distill import Teacher, distill_config
from .optimizers import lr_at, make_optimizer, make_schedule, set_lr

__all__ = ["DEFAULTS", "CHECKPOINT", "FitResult", "fit", "evaluate", "resolve_device",
           "seed_everything"]

DEFAULTS: dict[str, Any] = {"epochs": 10, "lr": 1e-3, "batch_size": 128, "optimizer": "adam",
                            "schedule": "cosine", "weight_decay": 0.0}
CHECKPOINT = "checkpoint.pt"


@dataclass
class FitResult:
    """What ``fit`` returns: the trained model (left on the training device), one metrics dict
    per epoch, the resolved settings, the input normalisation, the checkpoint path (or None)."""

    model: nn.Module
    history: list[dict]
    config: dict
    normalization: Normalization
    checkpoint: Path | None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; asking for absent CUDA is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but torch sees no CUDA device "
                         "(this torch build or machine has none); use 'cpu' or 'auto'")
    return dev


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _eval_set(model: nn.Module, data: ImageSet, batch_size: int = 1000,
              ctx: distributed.Context | None = None) -> tuple[float, float]:
    """(mean loss, accuracy) on ``data``; with a distributed ``ctx`` each rank evaluates its
    shard and the sums are all-reduced."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=data.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.device)
    part = distributed.shard(len(data), ctx.rank, ctx.world) if ctx else slice(0, len(data))
    with torch.no_grad():
        for start in range(part.start, part.stop, batch_size):
            x, y = data.batch(slice(start, min(start + batch_size, part.stop)))
            out = model(x)
            loss += F.cross_entropy(out, y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
    model.train(was_training)
    if ctx is not None:
        loss, correct = ctx.sum(loss, correct)
    n = max(1, len(data))
    return loss.item() / n, correct.item() / n


def evaluate(model: nn.Module, images, labels, normalization: Normalization | None = None,
             batch_size: int = 1000, device: str | torch.device | None = None) -> float:
    """Top-1 accuracy (0..1) of ``model`` on uint8 ``images`` with integer ``labels``.

    ``normalization`` defaults to the model's own (set by ``fit`` and ``load_model``).
    ``device`` defaults to where the model's parameters are.
    """
    norm = normalization or getattr(model, "normalization", None)
    if norm is None:
        raise ValueError("normalization: expected one for uint8 images; pass normalization= or "
                         "use a model returned by fit() / load_model()")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    return _eval_set(model, ImageSet(images, labels, norm, device), batch_size)[1]


def _resolve_config(name: str | None, explicit: dict) -> dict:
    recipe = registry.get(name).defaults if name is not None else {}
    return {**DEFAULTS, **recipe, **explicit}


def _check_resume(path: Path, saved: dict, explicit: dict, name: str | None, ckpt: dict) -> dict:
    """Settings of a resumed run: the saved ones; explicit arguments may not contradict them,
    except ``epochs``, which may grow when the schedule does not depend on the run length."""
    if name is not None and name != ckpt["model"]["name"]:
        raise ValueError(f"{path}: model: the run trains {ckpt['model']['name']!r}, "
                         f"got {name!r}")
    config = dict(saved)
    for key, value in explicit.items():
        if key == "epochs" or saved.get(key) == value:
            continue
        raise ValueError(f"{path}: config {key!r}: the run was started with {saved.get(key)!r}, "
                         f"got {value!r}; a resumed run keeps its settings (use another --out "
                         f"to change them)")
    if "epochs" in explicit and explicit["epochs"] != saved["epochs"]:
        if (ckpt.get("schedule") or {}).get("kind") in ("cosine", "exp"):
            raise ValueError(f"{path}: config 'epochs': the decaying schedule was planned for "
                             f"{saved['epochs']} epochs, got {explicit['epochs']}; resume with "
                             f"the same number of epochs")
        if explicit["epochs"] < ckpt["epoch"]:
            raise ValueError(f"{path}: config 'epochs': {ckpt['epoch']} epochs are already done, "
                             f"got {explicit['epochs']}")
        config["epochs"] = explicit["epochs"]
    return config


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    tmp.replace(path)


def _load_init(model: nn.Module, path: Path, channels: int) -> Normalization | None:
    """Copy the weights of checkpoint ``path`` into ``model``; return its normalisation."""
    ckpt = load_checkpoint(path)
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"{path}: init: the checkpoint's weights do not fit this model "
                         f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    if not ckpt.get("normalization"):
        return None
    norm = Normalization.from_dict(ckpt["normalization"], f"{path}: normalization")
    if norm.channels != channels:
        raise ValueError(f"{path}: init: the checkpoint was trained on {norm.channels}-channel "
                         f"images, got {channels}")
    return norm


def fit(model: nn.Module | str, train, val=None, **kwargs: Any) -> FitResult:
    ctx = distributed.setup(resolve_device(kwargs.get("device", "auto")))
    try:
        return _fit(model, train, val, _ctx=ctx, **kwargs)
    finally:
        ctx.close()


def _fit(model: nn.Module | str, train, val=None, *, epochs: int | None = None,
        lr: float | None = None, batch_size: int | None = None, optimizer: Any = None,
        schedule: str | None = None, weight_decay: float | None = None, seed: int | None = None,
        device: str | torch.device = "auto", out_dir: str | Path | None = None,
        resume: bool = False, overwrite: bool = False, threads: int | None = None,
        normalization: Normalization | None = None, name: str | None = None,
        kwargs: dict | None = None, progress: bool = True,
        loss_fn: Callable = F.cross_entropy,
        on_epoch_end: Callable[[dict], None] | None = None, sync_bn: bool = False,
        augment: str | None = None, init: str | Path | None = None,
        teacher: str | Path | None = None, distill: float | None = None,
        temperature: float | None = None,
        _ctx: distributed.Context = distributed.Context(), **settings: Any) -> FitResult:
    """Train ``model`` on ``train = (images, labels)``, checking ``val`` after every epoch.

    ``model`` is a registry name (built after seeding, with ``kwargs``) or an ``nn.Module``
    (its name comes from ``name=`` or the tag of ``build_model`` / ``load_model``; it is only
    needed when checkpoints are written).  Images are uint8 ``(N, H, W)`` or ``(N, C, H, W)``
    of any size (``val`` the same shape); ``normalization`` defaults to the per-channel mean/std
    of the training images (one scalar pair for one channel).  With ``out_dir`` a checkpoint is
    written there after every epoch (an existing one is an error unless ``resume`` or
    ``overwrite``).
    ``threads`` sets ``torch.set_num_threads``.  ``on_epoch_end(metrics)`` runs after each
    epoch's checkpoint is written.  Extra ``settings`` (momentum, lr_step, ...) join the config.
    ``augment``: ``"flip,shift=2"`` etc. (``lowbit.train.augment``).  ``init``: a checkpoint
    of the same model whose weights (and normalisation) the run starts from, with a fresh
    optimizer and schedule (fine-tuning); ignored when resuming.  ``teacher``: a checkpoint
    whose logits the student also learns from (knowledge distillation, ``lowbit.train.distill``;
    ``distill`` the soft term's weight, default 0.5, ``temperature`` default 4).

    Started by torchrun with several ranks (``WORLD_SIZE > 1``), ``fit`` trains data-parallel
    (DistributedDataParallel; ``batch_size`` stays the global batch, rank 0 alone writes and
    prints; ``sync_bn``: SyncBatchNorm, GPUs only): ``lowbit.train.distributed``.
    """
    if threads:
        torch.set_num_threads(int(threads))
    dev = _ctx.device(resolve_device(device))
    progress = progress and _ctx.main
    if dev.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    if isinstance(model, str):
        name, model = model, None
    if model is not None and name is None:
        name = (getattr(model, "lowbit_spec", None) or {}).get("name")
    opt_factory = optimizer if callable(optimizer) else None
    if opt_factory is not None:  # checkpoints store a name; the callable is passed again on resume
        optimizer = "custom:" + getattr(opt_factory, "__name__", type(opt_factory).__name__)
    explicit = {k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size,
                                      optimizer=optimizer, schedule=schedule,
                                      weight_decay=weight_decay, seed=seed, augment=augment,
                                      **distill_config(teacher, distill, temperature),
                                      **settings).items()
                if v is not None}
    train_x, train_y = check_arrays(*train, what="train images")
    val_arrays = check_arrays(*val, what="validation images") if val is not None else None
    if val_arrays is not None and val_arrays[0].shape[1:] != train_x.shape[1:]:
        raise ValueError(f"validation images: expected (C, H, W) = {train_x.shape[1:]} like the "
                         f"training images, got {val_arrays[0].shape[1:]}")

    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    ckpt = _open_checkpoint(ckpt_path, resume, overwrite, progress, out_dir)
    if ckpt is not None:
        model, name, kwargs, norm, config = _restored(ckpt_path, ckpt, explicit, name, model,
                                                      train_x, train_y)
    else:
        config = _resolve_config(name, explicit)
        config.setdefault("seed", 0)
        config["train_size"] = len(train_y)
        config["val_size"] = len(val_arrays[1]) if val_arrays is not None else 0
        seed_everything(config["seed"])
        if model is None:
            model = build_model(name, **(kwargs or {}))
        norm = normalization or Normalization.from_images(train_x)
        if init is not None:
            norm = _load_init(model, Path(init), train_x.shape[1]) or norm
            config["init"] = str(init)
    if ckpt_path is not None:
        spec = model_spec(model, name, kwargs)  # fail now, not after the first epoch
        name, kwargs = spec["name"], spec["kwargs"]

    model.to(dev)
    model.normalization = norm
    if name is not None:
        model.lowbit_spec = {"name": name, "kwargs": dict(kwargs or {})}
    net = _ctx.wrap(model, dev, sync_bn)          # DDP around the model when distributed
    train_set = ImageSet(train_x, train_y, norm, dev, "train images")
    val_set = ImageSet(*val_arrays, norm, dev, "validation images") if val_arrays else None

    steps = math.ceil(len(train_set) / int(config["batch_size"]))
    if str(config.get("optimizer")).startswith("custom:") and opt_factory is None:
        raise ValueError(f"optimizer: the run uses {config['optimizer']!r}; pass that callable "
                         f"as optimizer= again")
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad],
                         {**config, "optimizer": opt_factory or config["optimizer"]})
    sched = make_schedule(config, steps)
    history: list[dict] = []
    start = 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer_state"])
        sched = dict(ckpt["schedule"], epochs=int(config["epochs"]))
        if sched["steps_per_epoch"] != steps:
            raise ValueError(f"{ckpt_path}: schedule 'steps_per_epoch': expected {steps}, got "
                             f"{sched['steps_per_epoch']}")
        history, start = list(ckpt["history"]), int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])
        if progress:
            print(f"resuming {ckpt_path} after epoch {start}/{config['epochs']}", file=sys.stderr)
    tutor = None
    if config.get("teacher"):
        tutor = Teacher(config["teacher"], norm, tuple(train_x.shape[1:]),
                        config["distill"], config["temperature"], dev)
    run = _Epochs(net, model, train_set, opt, sched, config, loss_fn, _ctx, progress, tutor)

    for epoch in range(start, run.total):
        t0 = time.perf_counter()
        rec = run.train(epoch)
        if val_set is not None:
            rec["val_loss"], rec["val_acc"] = _eval_set(model, val_set, ctx=_ctx if _ctx.active
                                                        else None)
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if ckpt_path is not None and _ctx.main:
            save_checkpoint(ckpt_path, model, name=name, kwargs=kwargs, optimizer=opt,
                            schedule=sched, epoch=epoch + 1, config=config, history=history,
                            normalization=norm)
            _write_json(ckpt_path.with_name("history.json"), history)
        _ctx.barrier()
        if progress:
            val_txt = f"  val {rec['val_acc']:.2%}" if "val_acc" in rec else ""
            print(f"epoch {epoch + 1}/{run.total}  loss {rec['train_loss']:.4f}  train "
                  f"{rec['train_acc']:.2%}{val_txt}  lr {rec['lr']:.2e}  {rec['seconds']:.1f}s",
                  file=sys.stderr)
        if on_epoch_end is not None:
            on_epoch_end(rec)
    return FitResult(model, history, config, norm, ckpt_path)


def _open_checkpoint(ckpt_path: Path | None, resume: bool, overwrite: bool, progress: bool,
                     out_dir) -> dict | None:
    """The checkpoint to resume (None: start afresh); an existing one needs resume/overwrite."""
    if ckpt_path is None or not ckpt_path.exists():
        if resume and progress:
            print(f"no checkpoint in {out_dir}; starting from scratch", file=sys.stderr)
        return None
    if not resume:
        if not overwrite:
            raise FileExistsError(f"{ckpt_path}: a checkpoint is already there; resume it "
                                  f"(--resume) or choose another output folder (--out)")
        return None
    ckpt = load_checkpoint(ckpt_path)
    for key in ("optimizer_state", "schedule", "rng", "config", "normalization"):
        if not ckpt.get(key):
            raise ValueError(f"{ckpt_path}: field {key!r}: missing, so the run cannot "
                             f"be resumed exactly (was it written by fit?)")
    return ckpt


def _restored(ckpt_path: Path, ckpt: dict, explicit: dict, name, model, train_x, train_y):
    """(model, name, kwargs, normalization, config) of a resumed run, checked against the data."""
    config = _check_resume(ckpt_path, ckpt["config"], explicit, name, ckpt)
    spec = ckpt["model"]
    if model is None and spec.get("name") is None:
        raise ValueError(f"{ckpt_path}: the run trains a model built in Python "
                         f"({spec.get('class')}); pass it again: fit(model, ..., resume=True)")
    if model is None:
        model = build_model(spec["name"], **spec.get("kwargs", {}))
    model.load_state_dict(ckpt["model_state"])
    norm = Normalization.from_dict(ckpt["normalization"], f"{ckpt_path}: normalization")
    if norm.channels != train_x.shape[1]:
        raise ValueError(f"{ckpt_path}: normalization: the run was started on images with "
                         f"{norm.channels} channel(s), got {train_x.shape[1]}")
    if config.get("train_size") != len(train_y):
        raise ValueError(f"{ckpt_path}: config 'train_size': the run was started with "
                         f"{config.get('train_size')} training images, got {len(train_y)}")
    return model, spec["name"], spec.get("kwargs", {}), norm, config


class _Epochs:
    """One training epoch at a time: batches in the seeded order, augmentation, the step and
    the layers' ``post_step`` (clipping), this rank's share when distributed."""

    def __init__(self, net, model, train_set, opt, sched, config, loss_fn, ctx, progress,
                 teacher: Teacher | None = None):
        self.net, self.model, self.data, self.opt, self.sched = net, model, train_set, opt, sched
        self.teacher = teacher
        self.loss_fn, self.ctx, self.progress = loss_fn, ctx, progress
        self.bs, self.seed = int(config["batch_size"]), int(config["seed"])
        self.total = int(config["epochs"])
        self.steps = math.ceil(len(train_set) / self.bs)
        self.aug = Augment(config.get("augment"))
        self.post = [m for m in model.modules() if callable(getattr(m, "post_step", None))]

    def train(self, epoch: int) -> dict:
        """Train epoch ``epoch`` (0-based); its record: epoch, lr, train_loss, train_acc."""
        ctx, dev, n = self.ctx, self.data.device, len(self.data)
        self.model.train()
        order = torch.from_numpy(batch_order(n, self.seed, epoch)).to(dev)
        sum_loss = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        bar = tqdm(range(self.steps), desc=f"epoch {epoch + 1}/{self.total}", unit="batch",
                   disable=None if self.progress else True, leave=False, dynamic_ncols=True,
                   file=sys.stderr)
        lr_now = self.sched["lr"]
        for i in bar:
            lr_now = lr_at(self.sched, epoch * self.steps + i)
            set_lr(self.opt, lr_now)
            idx = order[i * self.bs:(i + 1) * self.bs]
            weight = 1.0
            if ctx.active:           # this rank's share; its loss weighted as in the batch
                part = idx[distributed.shard(len(idx), ctx.rank, ctx.world)]
                weight = ctx.world * len(part) / len(idx)
                idx = part if len(part) else idx      # (nothing left: run, but weigh 0)
            loss, hits = self._step(idx, weight)
            if weight:
                sum_loss += loss.detach().double() * len(idx)
                correct += hits
            if self.progress and (i % 25 == 0 or i == self.steps - 1):
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_now:.2e}")
        bar.close()
        sum_loss, correct = ctx.sum(sum_loss, correct)
        ctx.check_in_step(self.model, f"after epoch {epoch + 1}")
        ctx.broadcast_buffers(self.model)          # rank 0's BatchNorm statistics everywhere
        train_loss, train_acc = sum_loss.item() / n, correct.item() / n
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"epoch {epoch + 1}: training loss is {train_loss}; the run "
                                     f"diverged (try a lower --lr)")
        return {"epoch": epoch + 1, "lr": lr_now, "train_loss": train_loss,
                "train_acc": train_acc}

    def _step(self, idx: torch.Tensor, weight: float):
        """One optimizer step on the images ``idx``: (loss, correct predictions)."""
        x, y = self.data.batch(idx)
        if self.aug:
            x = self.aug(x)
        out = self.net(x)
        loss = (self.loss_fn(out, y) if self.teacher is None
                else self.teacher.loss(x, out, y, self.loss_fn))
        self.opt.zero_grad(set_to_none=True)
        (loss * weight if weight != 1.0 else loss).backward()
        self.opt.step()
        if self.post:
            with torch.no_grad():
                for m in self.post:
                    m.post_step()
        return loss, (out.detach().argmax(1) == y).sum()


fit.__doc__ = _fit.__doc__
fit.__signature__ = inspect.signature(_fit).replace(      # type: ignore[attr-defined]
    parameters=[p for p in inspect.signature(_fit).parameters.values() if p.name != "_ctx"])
