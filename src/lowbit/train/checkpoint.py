"""Training checkpoints: atomic ``torch.save`` dicts that can rebuild their model alone.

A checkpoint (format ``"lowbit-checkpoint"``, version 1) is a dict with::

    format, version       "lowbit-checkpoint", 1
    model                 {"name": registry name, "kwargs": builder kwargs}
    model_state           model.state_dict()
    optimizer_state       optimizer.state_dict() or None
    schedule              the learning-rate schedule (a pure function of the step; see
                          lowbit.train.optimizers) - this is the whole "scheduler state"
    rng                   torch / CUDA / numpy / python RNG states after the saved epoch
    epoch                 completed epochs
    config                training settings (epochs, lr, batch_size, optimizer, seed, ...)
    history               one metrics dict per completed epoch
    normalization         {"mean", "std", "scale"} of the input (lowbit.data.Normalization)
    complete              True when epoch == config["epochs"]
    extra                 free-form dict for other packages (masks, codebooks, ...)

Files are written to a temporary name in the same folder, fsynced, then renamed with
``os.replace``: a crash leaves either the old file or the new one, never half of one.
They are read with ``torch.load(weights_only=True)``: no arbitrary code runs on load.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lowbit.data import Normalization

from . import registry

__all__ = ["FORMAT", "VERSION", "CheckpointError", "build_model", "model_spec", "atomic_save",
           "save_checkpoint", "load_checkpoint", "load_model", "rng_state", "set_rng_state"]

FORMAT = "lowbit-checkpoint"
VERSION = 1
_REQUIRED = ("model", "model_state", "epoch")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or lacks a field it must have."""


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """``registry.build`` that also tags the model with its name and kwargs (``lowbit_spec``),
    so ``fit`` / ``save_checkpoint`` can record how to rebuild it."""
    model = registry.build(name, **kwargs)
    model.lowbit_spec = {"name": name, "kwargs": dict(kwargs)}
    return model


def model_spec(model: nn.Module, name: str | None = None, kwargs: dict | None = None) -> dict:
    """The ``{"name", "kwargs"}`` that rebuilds ``model``: explicit arguments win, then the tag
    left by :func:`build_model` / :func:`load_model`."""
    tag = getattr(model, "lowbit_spec", None) or {}
    name = name if name is not None else tag.get("name")
    if name is None:
        raise CheckpointError(
            "model name: expected a registered model name so the checkpoint can rebuild the "
            "model; pass name=... or build the model with lowbit.train.checkpoint.build_model")
    registry.get(name)  # unknown names fail here, with the list of known ones
    return {"name": name, "kwargs": dict(kwargs if kwargs is not None else tag.get("kwargs", {}))}


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a temp file + fsync + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable; not possible on every file system
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def rng_state() -> dict:
    """All RNG states (torch CPU, every CUDA device, numpy global, python) as plain data."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], [int(v) for v in np_state[1]], int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is present)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *, name: str | None = None,
                    kwargs: dict | None = None, optimizer: torch.optim.Optimizer | None = None,
                    schedule: dict | None = None, epoch: int = 0, config: dict | None = None,
                    history: list | None = None,
                    normalization: Normalization | dict | None = None,
                    extra: dict | None = None, with_rng: bool = True) -> Path:
    """Write a checkpoint atomically and return its path (see the module doc for the fields).

    ``name`` / ``kwargs`` default to the model's ``lowbit_spec`` tag; ``normalization``
    defaults to the model's ``normalization`` attribute (set by ``fit`` and ``load_model``).
    """
    norm = normalization if normalization is not None else getattr(model, "normalization", None)
    if isinstance(norm, Normalization):
        norm = norm.to_dict()
    config = dict(config or {})
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_spec(model, name, kwargs),
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "schedule": schedule,
        "rng": rng_state() if with_rng else None,
        "epoch": int(epoch),
        "config": config,
        "history": list(history or []),
        "normalization": norm,
        "complete": "epochs" in config and int(epoch) >= int(config["epochs"]),
        "extra": dict(extra or {}),
    }
    return atomic_save(ckpt, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint dict; errors name the file and the field."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated / foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: format: expected {FORMAT!r}, got {got!r}")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: version: expected {VERSION}, got {ckpt.get('version')!r}")
    for key in _REQUIRED:
        if key not in ckpt:
            raise CheckpointError(f"{path}: field {key!r}: missing")
    spec = ckpt["model"]
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{path}: field 'model': expected {{'name': str, 'kwargs': dict}}, "
                              f"got {spec!r}")
    ckpt["path"] = str(path)
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               strict: bool = True) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint through the registry and load its weights.

    Returns ``(model, meta)``: the model in eval mode on ``device``, with ``lowbit_spec`` and
    ``normalization`` (a :class:`lowbit.data.Normalization` or None) attributes; ``meta`` is
    the checkpoint dict without the state dicts and RNG, with ``normalization`` as a
    ``Normalization`` object.
    """
    ckpt = load_checkpoint(path)
    spec = ckpt["model"]
    try:
        model = build_model(spec["name"], **spec.get("kwargs", {}))
    except KeyError as e:
        raise CheckpointError(f"{ckpt['path']}: field 'model.name': {e.args[0]}") from None
    try:
        model.load_state_dict(ckpt["model_state"], strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt['path']}: field 'model_state' does not fit model "
                              f"{spec['name']!r}: {e}") from None
    norm = ckpt.get("normalization")
    model.normalization = Normalization.from_dict(norm, f"{ckpt['path']}: normalization") if norm else None
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model_state", "optimizer_state", "rng")}
    meta["normalization"] = model.normalization
    return model, meta
