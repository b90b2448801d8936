"""What ``lowbit train`` / ``eval`` / ``summary`` do, callable without the command line.

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

# OpenMP threads that spin while waiting steal the CPU from each other as soon as the machine
# is shared (2-3x slower per batch measured on a busy 2-core box); sleeping costs little when
# it is not.  Must be set before torch loads libgomp; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from lowbit.data import DataError, load, train_val_split  # noqa: E402

from . import registry  # noqa: E402
from .checkpoint import CheckpointError, build_model, load_checkpoint, load_model  # noqa: E402
from .loop import evaluate, fit, resolve_device  # noqa: E402
from .summary import format_table, summarize  # noqa: E402

__all__ = ["data_root", "train", "eval_checkpoint", "summary"]

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
    """``"fashion-mnist"`` (or None) -> the default search; anything else is a folder path."""
    return None if data in (None, "", "fashion-mnist") else data


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


@user_errors("train")
def train(model: str, data: str | None, epochs: int | None, out: str, resume: bool = False,
          seed: int | None = None, device: str = "auto", lr: float | None = None,
          batch_size: int | None = None, threads: int | None = None, val_size: int = 5000,
          overwrite: bool = False, progress: bool = True, model_kwargs: dict | None = None) -> int:
    """Train ``model`` on the training split minus ``val_size`` validation images, report the
    test accuracy, and write ``OUT/checkpoint.pt``, ``OUT/history.json``, ``OUT/result.json``.
    ``model_kwargs`` go to the recipe's builder (e.g. ``{"bits": "1,2,6"}``)."""
    registry.get(model)
    if threads:
        torch.set_num_threads(threads)
    root = data_root(data)
    images, labels = load("train", root)
    test_images, test_labels = load("test", root)
    ckpt_file = Path(out) / "checkpoint.pt"
    if resume and seed is None and ckpt_file.exists():  # the split must be the run's own
        seed = load_checkpoint(ckpt_file)["config"].get("seed")
    split_seed = 0 if seed is None else seed
    tr, va = train_val_split(images, labels, val_size=val_size, seed=split_seed)
    t0 = time.perf_counter()
    result = fit(model, tr, va if val_size else None, epochs=epochs, lr=lr,
                 batch_size=batch_size, seed=seed, device=device, out_dir=out, resume=resume,
                 overwrite=overwrite, progress=progress, kwargs=model_kwargs)
    wall = time.perf_counter() - t0
    acc = evaluate(result.model, test_images, test_labels)
    dev = resolve_device(device)
    summary_ = summarize(result.model)
    info = {
        "model": model, "epochs": result.config["epochs"], "test_acc": acc,
        "test_images": int(len(test_labels)),
        "val_acc": result.history[-1].get("val_acc") if result.history else None,
        "wall_seconds_this_invocation": round(wall, 1),
        "train_seconds_all_epochs": round(sum(h["seconds"] for h in result.history), 1),
        "device": _device_name(dev), "params": summary_.params, "bytes_fp32": summary_.bytes_fp32,
        "macs": summary_.macs, "config": result.config, "command": "lowbit " + " ".join(sys.argv[1:]),
        "checkpoint": str(result.checkpoint),
    }
    (Path(out) / "result.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    print(f"{model}: test accuracy {acc:.2%} on {len(test_labels)} images after "
          f"{result.config['epochs']} epochs ({wall:.0f} s this run, {_device_name(dev)})")
    print(f"checkpoint: {result.checkpoint}")
    return 0


@user_errors("eval")
def eval_checkpoint(checkpoint: str, data: str | None = None, device: str = "auto",
                    threads: int | None = None) -> int:
    """Print the test accuracy of a checkpoint."""
    if threads:
        torch.set_num_threads(threads)
    model, meta = load_model(checkpoint, device=resolve_device(device))
    if model.normalization is None:
        raise CheckpointError(f"{meta['path']}: field 'normalization': missing, cannot prepare "
                              f"uint8 input")
    images, labels = load("test", data_root(data))
    acc = evaluate(model, images, labels)
    print(f"{meta['path']}: {meta['model']['name']} after {meta['epoch']} epochs: "
          f"test accuracy {acc:.2%} ({acc * len(labels):.0f}/{len(labels)})")
    return 0


@user_errors("summary")
def summary(target: str) -> int:
    """Print the per-layer table of a checkpoint (a path) or of a registered model name."""
    if os.path.exists(target):
        model, meta = load_model(target)
        title = f"{meta['path']}: {meta['model']['name']} {meta['model'].get('kwargs') or ''}"
    else:
        try:
            registry.get(target)
        except KeyError as e:
            raise KeyError(f"{target!r} is neither a checkpoint file nor a model name; "
                           f"{e.args[0].split('; ', 1)[-1]}") from None
        model, title = build_model(target), f"{target} (untrained)"
    print(title.strip())
    print(format_table(summarize(model)))
    return 0
