"""Data: IDX files, Fashion-MNIST / MNIST, seeded splits, input normalisation.  numpy only.

This package never imports torch, so the torch-free runtime can read data too.
"""
from .batches import batch_order, iter_batches
from .fashion import CLASSES, NUM_CLASSES, find_root, load, load_files
from .idx import DataError, read_idx, write_idx
from .normalization import Normalization
from .split import subset, train_val_split

__all__ = ["DataError", "read_idx", "write_idx", "find_root", "load", "load_files", "CLASSES",
           "NUM_CLASSES", "train_val_split", "subset", "batch_order", "iter_batches",
           "Normalization"]
