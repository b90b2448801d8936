"""What ``lowbit train`` / ``eval`` / ``summary`` do on checkpoints and models (torch side),
callable without the command line.

Each function prints its result and returns a process exit code; user errors (missing or
corrupt data, a bad checkpoint, an unknown model, contradictory settings) are printed as one
``lowbit CMD: error: ...`` line with exit code 2 instead of a traceback.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

# OpenMP threads that spin while waiting steal the CPU from each other as soon as the machine
# is shared (2-3x slower per batch measured on a busy 2-core box); sleeping costs little when
# it is not.  Must be set before torch loads libgomp; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from lowbit.data import DataError, data_kind, load, train_val_split  # noqa: E402

from .checkpoint import (CheckpointError, build_model, builder_kwargs, load_checkpoint,  # noqa: E402
                         load_model)
from . import distributed  # noqa: E402
from .augment import parse as parse_augment  # noqa: E402
from .loop import evaluate, fit, resolve_device  # noqa: E402
from .summary import format_table, summarize  # noqa: E402

__all__ = ["data_root", "train", "eval_checkpoint", "summary", "load_shaped", "probe_model"]

USER_ERRORS = (DataError, CheckpointError, ValueError, KeyError, FileExistsError,
               FileNotFoundError)


def user_errors(cmd: str) -> Callable:
    def deco(fn: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs) -> int:
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as e:
                msg = e.args[0] if isinstance(e, KeyError) and e.args else e
                print(f"lowbit {cmd}: error: {msg}", file=sys.stderr)
                return 2
        return wrapper
    return deco


def data_root(data: str | None) -> str | None:
    """``"fashion-mnist"`` (or None) -> the default search; anything else is a path that
    ``lowbit.data.load`` reads (IDX folder, .npz file or folder, image folder)."""
    return None if data in (None, "", "fashion-mnist") else data


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def _chw(images: np.ndarray) -> tuple[int, int, int]:
    return (1, *images.shape[1:]) if images.ndim == 3 else tuple(images.shape[1:])  # type: ignore


def _fmt(shape) -> str:
    return "x".join(map(str, shape))


def load_shaped(split: str, root: str | None, shape: tuple[int, int, int] | None = None,
                wanted: str = "the model takes"):
    """``(images, labels)`` of a split; with ``shape`` (C, H, W), an image folder is resized to
    H x W, and other data must already have that shape (one clear error otherwise)."""
    kind = data_kind(root)
    size = tuple(shape[1:]) if shape is not None and kind == "image-folder" else None
    images, labels = load(split, root, size=size)
    if shape is not None and _chw(images) != tuple(shape):
        raise ValueError(f"{root or 'fashion-mnist'}: the {split} images are "
                         f"{_fmt(_chw(images))} (CxHxW), {wanted} {_fmt(shape)}"
                         + ("" if kind == "image-folder" else
                            "; only image folders can be resized"))
    return images, labels


def probe_model(name: str, kwargs: dict, shape, classes: int | None = None) -> int:
    """Build ``name`` once and run it on zeros of ``(2, *shape)``: any failure becomes one
    ValueError before training starts.  Returns the number of outputs (classes)."""
    try:
        model = build_model(name, **kwargs).eval()
    except (KeyError, ValueError):
        raise
    except Exception as e:  # the user's builder: report, don't dump a traceback
        raise ValueError(f"model {name}: building it with {kwargs or 'no arguments'} failed: "
                         f"{type(e).__name__}: {e}") from None
    try:
        with torch.no_grad():
            out = model(torch.zeros((2, *shape)))
    except Exception as e:
        raise ValueError(f"model {name}: does not run on {_fmt(shape)} (CxHxW) input: "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model {name}: expected logits of shape (N, classes), got {got} "
                         f"for {_fmt(shape)} input")
    if classes is not None and out.shape[1] < classes:
        raise ValueError(f"model {name}: has {out.shape[1]} outputs but the labels go up to "
                         f"{classes - 1}; give it {classes} classes (e.g. --model-arg "
                         f"num_classes={classes} if it takes that argument)")
    return int(out.shape[1])


def _resumed_kwargs(ckpt: dict, model: str, kwargs: dict) -> dict:
    """A resumed run rebuilds its model as it was saved; other builder arguments are an error."""
    spec = ckpt["model"]
    if spec["name"] != model:
        raise ValueError(f"{ckpt['path']}: model: the run trains {spec['name']!r}, got {model!r}")
    saved = dict(spec.get("kwargs") or {})
    changed = {k: v for k, v in kwargs.items() if saved.get(k) != v}
    if changed:
        raise ValueError(f"{ckpt['path']}: model arguments {changed} differ from the run's "
                         f"{saved}; a resumed run keeps them (use another --out to change them)")
    return saved


def _val_size(val_size: int | None, n: int, saved: dict | None) -> int:
    if val_size is None:
        if saved is not None and "val_size" in saved:
            return int(saved["val_size"])
        return min(5000, n // 10)
    if val_size >= n:
        raise ValueError(f"--val-size {val_size}: must be smaller than the number of training "
                         f"images ({n})")
    return val_size


@user_errors("train")
def train(model: str, data: str | None, epochs: int | None, out: str, resume: bool = False,
          seed: int | None = None, device: str = "auto", lr: float | None = None,
          batch_size: int | None = None, threads: int | None = None,
          val_size: int | None = None, overwrite: bool = False, progress: bool = True,
          model_kwargs: dict | None = None, model_args=(),
          input_size: tuple[int, int, int] | None = None, dsd: str | None = None,
          augment: str | None = None, init: str | None = None, teacher: str | None = None,
          distill: float | None = None, temperature: float | None = None) -> int:
    """Train ``model`` (a registry name or ``package.module:function``) on the training split
    minus ``val_size`` validation images (default min(5000, 10%)), report the test accuracy,
    and write ``OUT/checkpoint.pt``, ``OUT/history.json``, ``OUT/result.json``.
    ``model_args``: ``[(key, "value")]`` typed by the builder's signature; ``model_kwargs``
    (already typed, e.g. ``{"bits": "1,2,6"}``) are checked against it too.  ``input_size``
    (C, H, W): default the data's; image folders are resized to it.  ``dsd``: a sparsity (or
    layer spec) for Dense-Sparse-Dense training (``lowbit.train.dsdtrain``).  ``augment``
    (``"flip,shift=2"``), ``init`` (a checkpoint to fine-tune from) and ``teacher`` /
    ``distill`` / ``temperature`` (knowledge distillation): see ``fit``."""
    from lowbit.cliargs import check_out_dir
    check_out_dir(out)
    parse_augment(augment)                    # a bad spec fails before any data is read
    if init is not None and not Path(init).is_file():
        raise FileNotFoundError(f"--init {init}: no such checkpoint")
    if teacher is not None and not Path(teacher).is_file():
        raise FileNotFoundError(f"--teacher {teacher}: no such checkpoint")
    kwargs = builder_kwargs(model, model_args, model_kwargs)
    if threads:
        torch.set_num_threads(threads)
    root = data_root(data)
    images, labels = load_shaped("train", root, input_size, "--input-size asks for")
    shape = _chw(images)
    test_images, test_labels = load_shaped("test", root, shape)
    ckpt_file = Path(out) / "checkpoint.pt"
    saved = None
    if resume and ckpt_file.exists():
        ckpt = load_checkpoint(ckpt_file)
        saved, kwargs = ckpt["config"], _resumed_kwargs(ckpt, model, kwargs)
        if seed is None:  # the split must be the run's own
            seed = saved.get("seed")
    val_size = _val_size(val_size, len(labels), saved)
    probe_model(model, kwargs, shape, int(max(labels.max(), test_labels.max())) + 1)
    split_seed = 0 if seed is None else seed
    tr, va = train_val_split(images, labels, val_size=val_size, seed=split_seed)
    settings = {} if saved is not None else {
        "input_shape": list(shape), "data": os.path.abspath(root) if root else "fashion-mnist"}
    dsd = dsd if dsd is not None or saved is None else saved.get("dsd")
    fit_model, sched = model, None
    if dsd is not None:                       # Dense-Sparse-Dense: one run, three phases
        from .dsdtrain import detach, prepare
        fit_model, sched, epochs = prepare(model, kwargs, dsd, epochs, seed,
                                           ckpt_file if saved is not None else None)
        settings["dsd"] = str(dsd)
    t0 = time.perf_counter()
    result = fit(fit_model, tr, va if val_size else None, epochs=epochs, lr=lr,
                 batch_size=batch_size, seed=seed, device=device, out_dir=out, resume=resume,
                 overwrite=overwrite, progress=progress, kwargs=kwargs, name=model,
                 on_epoch_end=sched.on_epoch_end if sched is not None else None,
                 augment=augment, init=init if saved is None else None, teacher=teacher,
                 distill=distill, temperature=temperature, **settings)
    if sched is not None:
        detach(result.model)
    wall = time.perf_counter() - t0
    if distributed.world_from_env()[0] != 0:   # torchrun: rank 0 alone reports and writes
        return 0
    acc = evaluate(result.model, test_images, test_labels)
    dev = resolve_device(device)
    summary_ = summarize(result.model, (1, *shape))
    info = {
        "model": model, "epochs": result.config["epochs"], "test_acc": acc,
        "test_images": int(len(test_labels)),
        "val_acc": result.history[-1].get("val_acc") if result.history else None,
        "wall_seconds_this_invocation": round(wall, 1),
        "train_seconds_all_epochs": round(sum(h["seconds"] for h in result.history), 1),
        "device": _device_name(dev), "params": summary_.params, "bytes_fp32": summary_.bytes_fp32,
        "macs": summary_.macs, "input_shape": list(shape), "config": result.config,
        "command": "lowbit " + " ".join(sys.argv[1:]), "checkpoint": str(result.checkpoint),
    }
    if sched is not None:
        info["dsd"] = sched.summary(result.config["epochs"])
    (Path(out) / "result.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    print(f"{model}: test accuracy {acc:.2%} on {len(test_labels)} images after "
          f"{result.config['epochs']} epochs ({wall:.0f} s this run, {_device_name(dev)})")
    print(f"checkpoint: {result.checkpoint}")
    return 0


@user_errors("eval")
def eval_checkpoint(checkpoint: str, data: str | None = None, device: str = "auto",
                    threads: int | None = None, limit: int | None = None) -> int:
    """Print the test accuracy of a checkpoint (on the first ``limit`` test images)."""
    if threads:
        torch.set_num_threads(threads)
    model, meta = load_model(checkpoint, device=resolve_device(device))
    if model.normalization is None:
        raise CheckpointError(f"{meta['path']}: field 'normalization': missing, cannot prepare "
                              f"uint8 input")
    images, labels = load_shaped("test", data_root(data), meta["input_shape"])
    if limit:
        images, labels = images[:limit], labels[:limit]
    acc = evaluate(model, images, labels)
    print(f"{meta['path']}: {meta['model']['name']} after {meta['epoch']} epochs: "
          f"test accuracy {acc:.2%} ({acc * len(labels):.0f}/{len(labels)})")
    return 0


@user_errors("summary")
def summary(target: str, input_size: tuple[int, int, int] | None = None, model_args=(),
            model_kwargs: dict | None = None) -> int:
    """Print the per-layer table of a checkpoint (a path) or of a model (registered name or
    ``package.module:function``, untrained, built with ``model_args``) for ``(1, *input_size)``
    input (default: the checkpoint's recorded shape, else 1x28x28)."""
    if os.path.exists(target):
        model, meta = load_model(target)
        title = f"{meta['path']}: {meta['model']['name']} {meta['model'].get('kwargs') or ''}"
        shape = tuple(input_size or meta["input_shape"])
    else:
        try:
            kwargs = builder_kwargs(target, model_args, model_kwargs)
        except KeyError as e:
            raise KeyError(f"{target!r} is neither a file nor a model name; "
                           f"{e.args[0].split('; ', 1)[-1]}") from None
        model, title = build_model(target, **kwargs), f"{target} {kwargs or ''} (untrained)"
        shape = tuple(input_size or (1, 28, 28))
    try:
        table = summarize(model, (1, *shape))
    except Exception as e:  # a shape the model does not take
        raise ValueError(f"{target}: the model does not run on {_fmt(shape)} (CxHxW) input "
                         f"({type(e).__name__}: {e}); pass --input-size C,H,W") from None
    print(f"{title.strip()}; input {_fmt(shape)}")
    print(format_table(table))
    return 0
