"""numpy ``.npz`` data sets: arrays ``x`` (uint8 images), ``y`` (integer labels), ``classes``.

Fields of one file:

* ``x``: uint8, ``(N, H, W)`` (gray), ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` 1 or 3.
  A 4-D array is channels-first when its axis 1 is 1 or 3; otherwise it is channels-last when
  its last axis is 1 or 3; anything else is an error.  (So ``(N, 3, 32, 32)`` and
  ``(N, 32, 32, 3)`` both mean 3 channels of 32x32; an ambiguous ``(N, 3, 5, 3)`` is
  channels-first.)
* ``y``: integers ``(N,)``, one per image, all ``>= 0``.
* ``classes`` (optional): strings, one per class; every label must be below its length.

Splits: a folder with ``train.npz`` and / or ``test.npz`` (classes and image shape must agree
between the two), or one ``.npz`` file given directly, which is whichever split is asked for.
Problems raise :class:`DataError` naming the file and the field.  Images come back as uint8
``(N, C, H, W)`` and labels as int64 ``(N,)``.  Files are read without pickle.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .idx import DataError

__all__ = ["SPLIT_FILES", "npz_splits", "peek_npz", "image_layout", "image_chw", "class_names",
           "read_npz", "load_npz"]

SPLIT_FILES = {"train": "train.npz", "test": "test.npz"}
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


def image_layout(shape: tuple[int, ...], where: str = "x") -> str:
    """``"NHW"``, ``"NCHW"`` or ``"NHWC"`` for an image array of ``shape`` (rule in module doc)."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        if shape[1] in (1, 3):
            return "NCHW"
        if shape[3] in (1, 3):
            return "NHWC"
        raise DataError(f"{where}: expected 1 or 3 channels on axis 1 (N, C, H, W) or on the "
                        f"last axis (N, H, W, C), got shape {tuple(shape)}")
    raise DataError(f"{where}: expected shape (N, H, W), (N, C, H, W) or (N, H, W, C), got "
                    f"{tuple(shape)}")


def image_chw(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image array of ``shape`` (rule in module doc)."""
    layout = image_layout(shape, where)
    if layout == "NHW":
        return 1, shape[1], shape[2]
    if layout == "NCHW":
        return shape[1], shape[2], shape[3]
    return shape[3], shape[1], shape[2]


def npz_splits(root: str | os.PathLike) -> dict[str, Path]:
    """``{split: file}``: a ``.npz`` file serves both splits; a folder those of its
    ``train.npz`` / ``test.npz`` that exist (none is a :class:`DataError`)."""
    p = Path(root)
    if p.is_file():
        return {s: p for s in SPLIT_FILES}
    found = {s: p / f for s, f in SPLIT_FILES.items() if (p / f).is_file()}
    if not found:
        raise DataError(f"{p}: expected a .npz file or a folder with train.npz and/or test.npz")
    return found


def peek_npz(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of every array in a ``.npz``, from the headers only."""
    path = Path(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if not name.endswith(".npy"):
                    continue
                with z.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                out[name[:-4]] = (tuple(shape), np.dtype(dtype))
    except _READ_ERRORS as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return out


def _field(z, path: Path, key: str) -> np.ndarray:
    try:
        return z[key]
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path}: field {key!r}: expected plain numbers or strings, got an "
                            f"object array (pickled); save it with a numeric or string dtype"
                            ) from None
        raise DataError(f"{path}: field {key!r}: unreadable ({e})") from None
    except _READ_ERRORS as e:
        raise DataError(f"{path}: field {key!r}: unreadable ({type(e).__name__}: {e})") from None


def _images(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataError(f"{path}: field 'x': expected dtype uint8 (pixels 0..255), got {x.dtype}")
    layout = image_layout(x.shape, f"{path}: field 'x'")
    if len(x) == 0:
        raise DataError(f"{path}: field 'x': expected at least one image, got 0")
    if layout == "NHW":
        return np.ascontiguousarray(x[:, None])
    if layout == "NHWC":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return np.ascontiguousarray(x)


def _labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: field 'y': expected integer labels, got dtype {y.dtype}")
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: field 'y': expected shape ({n},) (one label per image in 'x'), "
                        f"got {y.shape}")
    if int(y.min()) < 0:
        raise DataError(f"{path}: field 'y': expected labels >= 0, got {int(y.min())}")
    return y.astype(np.int64)


def class_names(c: np.ndarray, path: Path) -> tuple[str, ...]:
    """The ``classes`` field as a tuple of str (checked: a non-empty 1-D string array)."""
    if c.ndim != 1 or c.dtype.kind not in "US" or len(c) == 0:
        raise DataError(f"{path}: field 'classes': expected a non-empty list of strings, got "
                        f"dtype {c.dtype} shape {c.shape}")
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in c.tolist())


def _classes(c: np.ndarray, labels: np.ndarray, path: Path) -> tuple[str, ...]:
    names = class_names(c, path)
    if int(labels.max()) >= len(names):
        raise DataError(f"{path}: field 'y': label {int(labels.max())} but 'classes' names only "
                        f"{len(names)} classes")
    return names


def read_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Read one file: ``(images, labels, classes)`` - uint8 ``(N, C, H, W)``, int64 ``(N,)``,
    the class names or None."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        z = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected a .npz archive with arrays 'x' and 'y', got a single "
                        f"array (.npy)")
    with z:
        for key in ("x", "y"):
            if key not in z.files:
                raise DataError(f"{path}: field {key!r}: missing (the file has: "
                                f"{', '.join(z.files) or 'nothing'})")
        images = _images(_field(z, path, "x"), path)
        labels = _labels(_field(z, path, "y"), len(images), path)
        classes = (_classes(_field(z, path, "classes"), labels, path)
                   if "classes" in z.files else None)
    return images, labels, classes


def _other_split(path: Path, other: Path, images: np.ndarray,
                 classes: tuple[str, ...] | None) -> None:
    """The other split's file must have the same image shape (C, H, W) and class names."""
    info = peek_npz(other)
    if "x" in info and len(info["x"][0]) in (3, 4):
        theirs = image_chw(info["x"][0], f"{other}: field 'x'")
        if theirs != images.shape[1:]:
            raise DataError(f"{path}: field 'x': images are (C, H, W) = {images.shape[1:]} but "
                            f"{other.name} has {theirs}; both splits need one image shape")
    if classes is not None and "classes" in info:
        with np.load(other, allow_pickle=False) as z:
            theirs = class_names(_field(z, other, "classes"), other)
        if theirs != classes:
            raise DataError(f"{path}: field 'classes': {list(classes)} but {other.name} has "
                            f"{list(theirs)}; both splits need the same classes")


def load_npz(split: str, root: str | os.PathLike
             ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """One split of a ``.npz`` data set (a file, or a folder with ``train.npz`` / ``test.npz``)."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split: expected one of {', '.join(SPLIT_FILES)}, got {split!r}")
    files = npz_splits(root)
    if split not in files:
        have = ", ".join(f.name for f in files.values())
        raise DataError(f"{root}: split {split!r}: no {SPLIT_FILES[split]} here (found {have})")
    images, labels, classes = read_npz(files[split])
    for other, f in files.items():
        if f != files[split]:
            _other_split(files[split], f, images, classes)
    return images, labels, classes
