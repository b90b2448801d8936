"""Model registry: every model and recipe that ``lowbit train --model NAME`` can build.

A recipe registers a builder plus its default training settings::

    @register("lenet5", epochs=10, lr=1e-3)
    def lenet5(num_classes: int = 10) -> nn.Module: ...

``build(name, **kwargs)`` returns a fresh ``nn.Module``; checkpoints store ``name`` and
``kwargs`` so that a model can be rebuilt from the file alone.

Training-loop contract: after every optimizer step the loop calls ``m.post_step()`` on each
module that defines it (BNN latent-weight clipping, pruning masks, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

_REGISTRY: dict[str, "Recipe"] = {}


@dataclass(frozen=True)
class Recipe:
    name: str
    builder: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)  # epochs, lr, optimizer, ...
    doc: str = ""


def register(name: str, **defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = Recipe(name, fn, dict(defaults), (fn.__doc__ or "").strip())
        return fn
    return deco


def _load_all() -> None:
    # Importing the modules that define recipes fills the registry.
    import importlib
    for mod in ("lowbit.train.models", "lowbit.train.recipes", "lowbit.train.resnet"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def get(name: str) -> Recipe:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build(name: str, **kwargs: Any):
    return get(name).builder(**kwargs)


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)
