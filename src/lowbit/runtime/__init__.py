"""Torch-free runtime: numpy + the compiled bitwise kernels (lowbit._kernels).

``kernels`` chooses the CPU path and checks arguments; ``ref`` holds the numpy reference
twins (the living spec of every kernel); ``Runtime(path).predict(x)`` (lowbit.runtime.graph)
runs a model file.
"""
from lowbit.runtime.kernels import (
    KernelUnavailableError,
    available_paths,
    bgemm,
    bitpack,
    default_path,
    unpack,
)

__all__ = ["Runtime", "KernelUnavailableError", "available_paths", "bgemm", "bitpack", "default_path", "unpack"]


def __getattr__(name):          # lazy: ``from lowbit.runtime import Runtime``
    if name == "Runtime":
        from lowbit.runtime.graph import Runtime
        return Runtime
    raise AttributeError(f"module 'lowbit.runtime' has no attribute {name!r}")
