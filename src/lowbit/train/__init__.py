"""lowbit.train: quantized layers, the one-call converter, training and export (torch).

Public API (imported lazily on first use: ``import lowbit.train`` itself imports neither torch
nor ``lowbit.runtime``)::

    QuantConv2d, QuantLinear            quantized layers            (lowbit.train.layers)
    quantize, quantize_report           convert your own model      (lowbit.train.convert)
    QuantizeWarning
    ClipOptimizer, clip_after_step      latent-weight clipping in your own training loop
    apply_post_step
    fit, evaluate                       lowbit's training loop      (lowbit.train.loop)
    export_model                        write a lowbit model file   (lowbit.train.export)

See docs/convert.md for the workflow.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "QuantConv2d": "layers", "QuantLinear": "layers",
    "quantize": "convert", "quantize_report": "convert", "QuantizeWarning": "convert",
    "ClipOptimizer": "convert", "clip_after_step": "convert", "apply_post_step": "convert",
    "fit": "loop", "evaluate": "loop",
    "export_model": "export",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from .convert import (ClipOptimizer, QuantizeWarning, apply_post_step, clip_after_step,
                          quantize, quantize_report)
    from .export import export_model
    from .layers import QuantConv2d, QuantLinear
    from .loop import evaluate, fit


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
