"""Training checkpoints: atomic ``torch.save`` dicts that can rebuild their model alone.

A checkpoint (format ``"lowbit-checkpoint"``, version 1) is a dict with::

    format, version       "lowbit-checkpoint", 1
    model                 {"name": registry name or "package.module:function",
                           "kwargs": builder kwargs}
    model_state           model.state_dict()
    optimizer_state       optimizer.state_dict() or None
    schedule              the learning-rate schedule (a pure function of the step; see
                          lowbit.train.optimizers) - this is the whole "scheduler state"
    rng                   torch / CUDA / numpy / python RNG states after the saved epoch
    epoch                 completed epochs
    config                training settings (epochs, lr, batch_size, optimizer, seed, ...)
                          and ``input_shape`` [C, H, W] of the images the model was trained on
    history               one metrics dict per completed epoch
    normalization         {"mean", "std", "scale"} of the input (lowbit.data.Normalization)
    complete              True when epoch == config["epochs"]
    extra                 free-form dict for other packages (masks, codebooks, ...)

Files are written to a temporary name in the same folder, fsynced, then renamed with
``os.replace``: a crash leaves either the old file or the new one, never half of one.
They are read with ``torch.load(weights_only=True)``: no pickled code runs on load.  A model
given as ``package.module:function`` (your own builder, see :func:`build_model`) is rebuilt by
importing that module and calling that function with the stored kwargs, exactly as the
training command did: load such a checkpoint only where you would run that module.
"""
from __future__ import annotations

import importlib
import inspect
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lowbit.codec import is_container
from lowbit.data import Normalization

from . import registry

__all__ = ["FORMAT", "VERSION", "CheckpointError", "build_model", "builder", "builder_kwargs",
           "model_spec", "input_shape_of", "atomic_save", "save_checkpoint", "load_checkpoint",
           "load_model", "rng_state", "set_rng_state"]

FORMAT = "lowbit-checkpoint"
VERSION = 1
_REQUIRED = ("model", "model_state", "epoch")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or lacks a field it must have."""


def _import_builder(ref: str):
    """The callable named by ``package.module:function`` (the function may be dotted, e.g.
    ``module:Class.factory``).  The current folder is searched too, after ``sys.path``."""
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"model {ref!r}: expected package.module:function")
    if mod_name.split(".")[0] in getattr(sys, "stdlib_module_names", ()):
        raise ValueError(f"model {ref!r}: {mod_name!r} is a standard-library module, not a "
                         f"model builder")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if not (e.name and mod_name.startswith(e.name)):
            raise                       # the user's module imports something missing
        if os.getcwd() in sys.path:
            raise ValueError(f"model {ref!r}: no module named {e.name!r} (is it on "
                             f"PYTHONPATH or in the current folder?)") from None
        sys.path.append(os.getcwd())
        return _import_builder(ref)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {ref!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (inspect.isfunction(obj) or inspect.ismethod(obj)
            or (inspect.isclass(obj) and issubclass(obj, nn.Module))):
        raise ValueError(f"model {ref!r}: expected a Python function (or an nn.Module class) "
                         f"that returns an nn.Module, got {type(obj).__name__}")
    return obj


def builder(name: str) -> registry.Recipe:
    """The recipe of a registered name, or of ``package.module:function`` (imported and then
    registered under that name, with the function's ``lowbit_defaults`` dict, if it has one,
    as its default training settings)."""
    if ":" in name and name not in registry.names():
        fn = _import_builder(name)
        registry.register(name, **dict(getattr(fn, "lowbit_defaults", None) or {}))(fn)
    return registry.get(name)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model or ``package.module:function`` (your own function returning an
    ``nn.Module``) with ``kwargs``, and tag it with its name and kwargs (``lowbit_spec``), so
    ``fit`` / ``save_checkpoint`` can record how to rebuild it."""
    model = builder(name).builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r}: the builder returned {type(model).__name__}, "
                         f"expected an nn.Module")
    model.lowbit_spec = {"name": name, "kwargs": dict(kwargs)}
    return model


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _param_type(p: inspect.Parameter) -> type | None:
    """int / float / bool / str from a parameter's annotation (also a string one, e.g.
    ``"int | None"``), else from the type of its default; None when neither says."""
    ann = p.annotation
    if isinstance(ann, str):
        words = set(re.findall(r"[A-Za-z_]\w*", ann)) - {"None", "Optional", "typing"}
        if len(words) == 1 and next(iter(words)) in _TYPES:
            return _TYPES[next(iter(words))]
    elif ann in (int, float, bool, str):
        return ann
    if p.default is not inspect.Parameter.empty and type(p.default) in (int, float, bool, str):
        return type(p.default)
    return None


def _guess(value: str) -> Any:
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def _typed(name: str, key: str, value: str, kind: type | None) -> Any:
    if kind is None:
        return _guess(value)
    if kind is bool:
        if value.lower() not in _BOOLS:
            raise ValueError(f"--model-arg {key}={value}: {name} expects true or false for "
                             f"{key!r}")
        return _BOOLS[value.lower()]
    if kind is str:
        return value
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"--model-arg {key}={value}: {name} expects {what} for "
                         f"{key!r}") from None


def builder_kwargs(name: str, pairs, extra: dict | None = None) -> dict:
    """Builder kwargs from ``--model-arg`` strings (``[(key, value), ...]``), each typed by the
    builder's signature (annotation, else default: ``width=abc`` for a number is an error, not
    a TypeError later); unknown keys are errors unless the builder takes ``**kwargs``.
    ``extra`` (already typed, e.g. ``{"bits": "1,2,6"}``) is checked the same way."""
    fn = builder(name).builder
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = None
    items = [(k, v, False) for k, v in pairs] + [(k, v, True) for k, v in (extra or {}).items()]
    if params is None:
        return {k: (v if done else _guess(v)) for k, v, done in items}
    open_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    out: dict[str, Any] = {}
    for key, value, done in items:
        if key not in named and not open_kw:
            flag = f"--{key}" if done else f"--model-arg {key}"
            raise ValueError(f"{flag}: {name} takes no argument {key!r}; its arguments: "
                             f"{', '.join(named) or 'none'}")
        out[key] = value if done else _typed(name, key, value, _param_type(named[key])
                                             if key in named else None)
    return out


def model_spec(model: nn.Module, name: str | None = None, kwargs: dict | None = None) -> dict:
    """The ``{"name", "kwargs"}`` that rebuilds ``model``: explicit arguments win, then the tag
    left by :func:`build_model` / :func:`load_model`.  A model built in Python without a name
    gets ``name: None`` and its class: the checkpoint keeps its weights, and whoever resumes or
    loads it builds the model again (``fit(model, ..., resume=True)``; ``load_state_dict``)."""
    tag = getattr(model, "lowbit_spec", None) or {}
    name = name if name is not None else tag.get("name")
    if name is None:
        cls = type(model)
        return {"name": None, "kwargs": {}, "class": f"{cls.__module__}.{cls.__qualname__}"}
    builder(name)  # unknown names fail here, with the list of known ones
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
    shape = getattr(model, "lowbit_input_shape", None)
    if shape is not None and "input_shape" not in config:
        config["input_shape"] = [int(v) for v in shape]
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
    if is_container(path):
        raise CheckpointError(f"{path}: is a lowbit model file, not a training checkpoint "
                              f"(export and compress take the checkpoint.pt of a training run; "
                              f"eval, run and summary take model files too)")
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
    if not isinstance(spec, dict) or not (isinstance(spec.get("name"), str)
                                          or (spec.get("name") is None and "class" in spec)):
        raise CheckpointError(f"{path}: field 'model': expected {{'name': str, 'kwargs': dict}}, "
                              f"got {spec!r}")
    ckpt["path"] = str(path)
    return ckpt


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               strict: bool = True) -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint (:func:`build_model`: registry name or
    ``package.module:function``) and load its weights.

    Returns ``(model, meta)``: the model in eval mode on ``device``, with ``lowbit_spec``,
    ``normalization`` (a :class:`lowbit.data.Normalization` or None) and
    ``lowbit_input_shape`` (C, H, W) attributes; ``meta`` is the checkpoint dict without the
    state dicts and RNG, with ``normalization`` as a ``Normalization`` object and
    ``input_shape``.
    """
    ckpt = load_checkpoint(path)
    spec = ckpt["model"]
    if spec.get("name") is None:
        raise CheckpointError(
            f"{ckpt['path']}: field 'model.name': the checkpoint holds the weights of a model "
            f"built in Python ({spec.get('class', 'unknown class')}), which it cannot rebuild by "
            f"itself: build the model again and load ckpt['model_state'], resume with "
            f"fit(model, ..., resume=True), or train it with --model package.module:function")
    try:
        model = build_model(spec["name"], **spec.get("kwargs", {}))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{ckpt['path']}: field 'model.name': "
                              f"{e.args[0] if e.args else e}") from None
    try:
        model.load_state_dict(ckpt["model_state"], strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt['path']}: field 'model_state' does not fit model "
                              f"{spec['name']!r}: {e}") from None
    norm = ckpt.get("normalization")
    model.normalization = Normalization.from_dict(norm, f"{ckpt['path']}: normalization") if norm else None
    model.lowbit_input_shape = input_shape_of(ckpt, model.normalization)
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model_state", "optimizer_state", "rng")}
    meta["normalization"] = model.normalization
    meta["input_shape"] = model.lowbit_input_shape
    return model, meta


def input_shape_of(ckpt: dict, normalization: Normalization | None = None) -> tuple[int, int, int]:
    """(C, H, W) the checkpoint's model was trained on: ``config["input_shape"]``; checkpoints
    written before it was recorded were all 28x28 (Fashion-MNIST), with the normalization's
    channel count."""
    shape = (ckpt.get("config") or {}).get("input_shape")
    if shape is not None:
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3
                and all(isinstance(v, int) and v >= 1 for v in shape)):
            raise CheckpointError(f"{ckpt.get('path', 'checkpoint')}: field 'config.input_shape': "
                                  f"expected [C, H, W], got {shape!r}")
        return tuple(int(v) for v in shape)  # type: ignore[return-value]
    return (normalization.channels if normalization is not None else 1, 28, 28)
