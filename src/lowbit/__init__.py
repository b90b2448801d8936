"""lowbit: train, compress and run binary / ternary / k-bit and Deep-Compression vision models.

Packages: ``lowbit.train`` (the only one that imports torch), ``lowbit.codec`` (model file
format, numpy only), ``lowbit.runtime`` (numpy + compiled bitwise kernels), ``lowbit.data``,
``lowbit.bench``, ``lowbit.detect``.
"""

__version__ = "0.1.0"
