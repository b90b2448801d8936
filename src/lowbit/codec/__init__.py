"""lowbit.codec: the project's model-file format and the Deep-Compression codecs (numpy only).

- ``container``: versioned, checksummed, 64-byte-aligned sections + JSON header, atomic writes;
  ``container.save(path, header, sections)`` / ``container.load(path) -> (header, sections)``.
- ``model``: model files (graph + encoded tensors + meta) on the container;
  ``lowbit.codec.save`` / ``lowbit.codec.load`` (tensors decode to dense float arrays).
- ``compressed``: Deep-Compression tensor encoding (sparse relative index, codebook, Huffman).
- ``graph``: the graph schema (version 2: a DAG of named values), its version and validation;
- ``fold``, ``rewrite``: BatchNorm / sign(BatchNorm) folding and the export-time graph rewrites;
- ``sparse``, ``huffman``, ``bitpack``: the building blocks.

Never imports torch.
"""
from lowbit.codec.container import FormatError, is_container
from lowbit.codec import bitpack, huffman, sparse, compressed, container, model
from lowbit.codec import packed  # registers the 'packed' tensor encoding
from lowbit.codec import fold, graph, rewrite, shapes
from lowbit.codec.model import ModelFile, Tensor, load, save

__all__ = ["FormatError", "is_container", "ModelFile", "Tensor", "load", "save", "bitpack",
           "huffman", "sparse", "compressed", "container", "model", "packed", "fold", "graph",
           "rewrite", "shapes"]
