"""Torch-free runtime: numpy + the compiled bitwise kernels (lowbit._kernels).

``kernels`` chooses the CPU path and checks arguments; ``ref`` holds the numpy reference
twins (the living spec of every kernel).
"""
from lowbit.runtime.kernels import (
    KernelUnavailableError,
    available_paths,
    bgemm,
    bitpack,
    default_path,
    unpack,
)

__all__ = ["KernelUnavailableError", "available_paths", "bgemm", "bitpack", "default_path", "unpack"]
