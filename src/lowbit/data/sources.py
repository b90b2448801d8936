"""The one entry point for data: ``load(split, root)`` picks the reader from what ``root`` is.

``root`` is looked at in this order, first match wins:

1. ``None``: Fashion-MNIST's IDX files, searched in ``$LOWBIT_DATA`` then
   ``/usr/share/datasets/fashion-mnist`` (see :mod:`lowbit.data.fashion`);
2. a ``.npz`` file: that file is the split asked for (see :mod:`lowbit.data.npz`);
3. a folder with ``train.npz`` and / or ``test.npz``;
4. a folder with IDX files (Fashion-MNIST / MNIST names); the two files of the split asked
   for are enough;
5. an image-folder tree: ``<class>/<images>``, or ``train/<class>/...`` and
   ``test/<class>/...`` (see :mod:`lowbit.data.folder`).

IDX data comes back as uint8 ``(N, 28, 28)`` exactly as it always has; npz and image folders
give uint8 ``(N, C, H, W)``.  Labels are int64 ``(N,)`` in every case.  :func:`describe` says
what a ``root`` holds (kind, splits, image shape, classes, counts) without decoding images,
for commands to report what was found.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import fashion, folder, npz
from .idx import DataError

__all__ = ["SPLITS", "DataInfo", "data_kind", "load", "load_with_classes", "describe"]

SPLITS = ("train", "test")


def data_kind(root: str | os.PathLike | None) -> str:
    """``"idx"``, ``"npz"`` or ``"image-folder"``: which reader :func:`load` uses for ``root``.

    A path that is none of these is reported as ``"idx"`` (its loader explains what is missing).
    """
    if root is None:
        return "idx"
    p = Path(root)
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return "npz"
        raise DataError(f"{p}: expected a .npz file or a data folder (IDX files, train.npz / "
                        f"test.npz, or class subfolders of images), got another kind of file")
    if p.is_dir():
        if any((p / f).is_file() for f in npz.SPLIT_FILES.values()):
            return "npz"
        if not fashion.has_idx_files(p) and folder.is_image_folder(p):
            return "image-folder"
    return "idx"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")


def load_with_classes(split: str = "train", root: str | os.PathLike | None = None, *,
                      size: tuple[int, int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Like :func:`load`, plus the class names when the data names them (else None)."""
    _check_split(split)
    kind = data_kind(root)
    if size is not None and kind != "image-folder":
        raise ValueError(f"size: resizing is only for image folders; {root} holds {kind} data")
    if kind == "npz":
        return npz.load_npz(split, root)
    if kind == "image-folder":
        return folder.load_image_folder(split, root, size=size)
    try:
        images, labels = fashion.load(split, root)
    except DataError as e:
        if root is None or not Path(root).is_dir() or fashion.has_idx_files(root):
            raise
        raise DataError(f"{e} Other layouts a data folder may have: train.npz and/or test.npz; "
                        f"or one subfolder per class of PNG/JPEG/BMP images (optionally under "
                        f"train/ and test/); or pass a single .npz file.") from None
    return images, labels, fashion.CLASSES if root is None else None


def load(split: str = "train", root: str | os.PathLike | None = None, *,
         size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split (``"train"`` or ``"test"``): ``(images, labels)``.

    ``root`` as in the module doc; IDX images are uint8 ``(N, 28, 28)``, the others uint8
    ``(N, C, H, W)``; labels int64.  ``size=(H, W)`` resizes the images of an image folder.
    """
    images, labels, _ = load_with_classes(split, root, size=size)
    return images, labels


@dataclass(frozen=True)
class DataInfo:
    """What :func:`describe` found: reader kind, the path used, the splits it has (``"*"`` when
    one source serves every split), image shape ``(C, H, W)`` (None if unknown), class names
    (None if the data does not name them), and the number of images per split."""

    kind: str
    root: Path
    splits: tuple[str, ...]
    shape: tuple[int, int, int] | None
    classes: tuple[str, ...] | None
    counts: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        what = {"idx": "IDX files", "npz": "npz", "image-folder": "image folder"}[self.kind]
        counts = ", ".join(f"{s} {self.counts[s]}" for s in self.splits if s in self.counts)
        shape = "x".join(map(str, self.shape)) if self.shape else "?"
        cls = f"{len(self.classes)} classes" if self.classes else "unnamed classes"
        return f"{what} at {self.root}: {counts or 'no splits'} images of {shape} (CxHxW), {cls}"


def _idx_count(path: Path) -> tuple[int, ...]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            dims = f.read(4 * head[3]) if len(head) == 4 else b""
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    return tuple(int(d) for d in np.frombuffer(dims, ">u4"))


def _describe_idx(root) -> DataInfo:
    d = fashion.find_root(None) if root is None else Path(root)
    splits = fashion.idx_splits(d)
    if not splits:
        fashion.load("train", d)  # raises, saying what is missing
    counts = {s: _idx_count(fashion._find_file(d, fashion.FILES[s][0]))[0] for s in splits}
    return DataInfo("idx", d, splits, (1, 28, 28), fashion.CLASSES if root is None else None,
                    counts)


def _describe_npz(root) -> DataInfo:
    files = npz.npz_splits(root)
    single = len(set(files.values())) == 1 and Path(root).is_file()
    shape, classes, counts = None, None, {}
    for s, f in files.items():
        info = npz.peek_npz(f)
        if "x" not in info:
            raise DataError(f"{f}: field 'x': missing")
        counts["*" if single else s] = info["x"][0][0]
        shape = shape or npz.image_chw(info["x"][0], f"{f}: field 'x'")
        if classes is None and "classes" in info:
            with np.load(f, allow_pickle=False) as z:
                classes = npz.class_names(npz._field(z, f, "classes"), f)
    return DataInfo("npz", Path(root), ("*",) if single else tuple(files), shape, classes, counts)


def _describe_folder(root) -> DataInfo:
    folders = folder.split_folders(root)
    single = len(set(folders.values())) == 1
    classes, counts, first = None, {}, None
    for s, f in folders.items():
        classes = folder.class_names(f)
        files = [p for c in classes for p in folder.image_files(f / c)]
        counts["*" if single else s] = len(files)
        first = first or (files[0] if files else None)
    shape = None
    if first is not None:
        (h, w), c = folder.peek_image(first)
        shape = (c, h, w)
    splits = ("*",) if single else tuple(folders)
    return DataInfo("image-folder", Path(root), splits, shape, classes, counts)


def describe(root: str | os.PathLike | None = None) -> DataInfo:
    """What ``root`` holds, read from file headers and folder listings only (no decoding)."""
    kind = data_kind(root)
    if kind == "npz":
        return _describe_npz(root)
    if kind == "image-folder":
        return _describe_folder(root)
    return _describe_idx(root)
