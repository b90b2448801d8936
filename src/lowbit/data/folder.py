"""Image folders: one subfolder per class, PNG / JPEG / BMP files read with Pillow.

Layouts (``ROOT`` is what the caller passes)::

    ROOT/train/<class>/*.png   ROOT/test/<class>/*.png    two splits (either may be absent)
    ROOT/<class>/*.png                                     one split, used for whichever is asked

Rules:

* classes are the subfolder names, sorted; class ``i`` of that sorted list has label ``i``.
  Both splits must have the same class folders (an empty class folder is allowed).
* images are the files directly inside a class folder whose suffix is ``.png``, ``.jpg``,
  ``.jpeg`` or ``.bmp`` (any case), read in sorted name order; hidden files and other files
  are skipped.
* channels: 8-bit gray images (Pillow modes ``L``, ``1``, ``LA``) give 1 channel, colour ones
  (``RGB``, ``RGBA``, ``P``, ``CMYK``, ...) 3; alpha is dropped.  The first image of the dataset
  (of ``train`` when it exists) decides; a gray image in a colour dataset is converted to RGB,
  a colour image in a gray dataset is an error unless ``mode="L"`` or ``mode="RGB"`` is passed,
  which converts every image.  16-bit and float images are refused.
* size: every image must have the size of that first image, else :class:`DataError` names the
  first file that differs and both sizes, unless ``size=(H, W)`` is passed, which resizes every
  image (bilinear) that is not already that size.
* a file Pillow cannot read is a :class:`DataError` naming the file.

Returned images are uint8 ``(N, C, H, W)``, labels int64 ``(N,)``, plus the class names.
Pillow is imported only when a folder is read.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .idx import DataError

__all__ = ["IMAGE_SUFFIXES", "SPLITS", "is_image_folder", "split_folders", "class_names",
           "image_files", "peek_image", "read_image_folder", "load_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLITS = ("train", "test")
_GRAY = {"1", "L", "LA", "La"}
_COLOR = {"RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise DataError("reading image folders needs Pillow: pip install 'pillow>=9'") from None
    return Image


def _subdirs(d: Path) -> list[Path]:
    return sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def image_files(directory: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``directory``, sorted by name."""
    return sorted((p for p in Path(directory).iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                   and p.is_file()), key=lambda p: p.name)


def _has_class_images(d: Path) -> bool:
    return any(image_files(c) for c in _subdirs(d))


def is_image_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` looks like one of the layouts above (some class folder has an image)."""
    d = Path(root)
    if not d.is_dir():
        return False
    if any((d / s).is_dir() for s in SPLITS):
        return any((d / s).is_dir() and _has_class_images(d / s) for s in SPLITS)
    return _has_class_images(d)


def split_folders(root: str | os.PathLike) -> dict[str, Path]:
    """``{split: folder}``: ``ROOT/train`` and ``ROOT/test`` where present, or ``ROOT`` itself
    for both splits when it has neither (a flat class tree)."""
    d = Path(root)
    if not d.is_dir():
        raise DataError(f"{d}: image folder: not a directory")
    found = {s: d / s for s in SPLITS if (d / s).is_dir()}
    return found or {s: d for s in SPLITS}


def class_names(folder: str | os.PathLike) -> tuple[str, ...]:
    """The sorted class subfolder names of one split folder; none is a :class:`DataError`."""
    names = tuple(p.name for p in _subdirs(Path(folder)))
    if not names:
        raise DataError(f"{folder}: classes: expected one subfolder per class, found none")
    return names


def _channels(path: Path, mode: str) -> int:
    if mode in _GRAY:
        return 1
    if mode in _COLOR:
        return 3
    raise DataError(f"{path}: mode: expected 8-bit gray or colour pixels, got Pillow mode "
                    f"{mode!r}; convert the image to 8 bits (L or RGB)")


def peek_image(path: Path) -> tuple[tuple[int, int], int]:
    """``((H, W), channels)`` of one image, from its header only."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            return (im.height, im.width), _channels(path, im.mode)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _read_one(path: Path, channels: int, size: tuple[int, int], resize: bool,
              first: Path, mode_given: bool) -> np.ndarray:
    """One image as uint8 ``(C, H, W)``, checked against the dataset's channels and size."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            im.load()
            c = _channels(path, im.mode)
            if c > channels and not mode_given:
                raise DataError(
                    f"{path}: channels: expected a gray image like {first}, got a colour one "
                    f"(mode {im.mode}); pass mode='RGB' to read every image as colour, or "
                    f"mode='L' to convert every image to gray")
            im = im.convert("L" if channels == 1 else "RGB")
            if (im.height, im.width) != tuple(size):
                if not resize:
                    raise DataError(
                        f"{path}: size: expected (H, W) = {tuple(size)} like {first}, got "
                        f"{(im.height, im.width)}; all images of a dataset must have one size "
                        f"(pass size=(H, W) to resize them)")
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _check_size_arg(size) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size: expected (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size: expected positive (H, W), got {size!r}")
    return h, w


def read_image_folder(folder: str | os.PathLike, size: tuple[int, int] | None = None,
                      mode: str | None = None, *, classes: tuple[str, ...] | None = None,
                      reference: str | os.PathLike | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read one split folder (``<folder>/<class>/<image>``).

    Returns ``(images, labels, classes)``: uint8 ``(N, C, H, W)``, int64 ``(N,)`` and the sorted
    class names.  ``size`` = ``(H, W)`` resizes, ``mode`` (``"L"`` / ``"RGB"``) converts every
    image; ``classes`` (the names another split has) must equal this folder's; ``reference`` is
    the image whose size and channels the dataset has (default: this folder's first image).
    """
    folder = Path(folder)
    size = _check_size_arg(size)
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode: expected None, 'L' or 'RGB', got {mode!r}")
    names = class_names(folder)
    if classes is not None and tuple(classes) != names:
        raise DataError(f"{folder}: classes: expected the class folders {list(classes)}, got "
                        f"{list(names)}; every split needs the same class folders")
    files = [(f, label) for label, name in enumerate(names) for f in image_files(folder / name)]
    if not files:
        raise DataError(f"{folder}: images: no {'/'.join(IMAGE_SUFFIXES)} files in its class "
                        f"folders {list(names)}")
    first = Path(reference) if reference is not None else files[0][0]
    ref_size, channels = peek_image(first)
    if mode is not None:
        channels = 1 if mode == "L" else 3
    images = np.empty((len(files), channels) + (size or ref_size), np.uint8)
    for i, (f, _) in enumerate(files):
        images[i] = _read_one(f, channels, size or ref_size, size is not None, first,
                              mode is not None)
    labels = np.fromiter((lab for _, lab in files), np.int64, len(files))
    return images, labels, names


def load_image_folder(split: str, root: str | os.PathLike, size: tuple[int, int] | None = None,
                      mode: str | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One split of an image-folder dataset (layouts in the module doc).

    The other split's class folders must be the same, and its first image sets the size and
    channels when it is the ``train`` split, so that both splits always agree.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    folders = split_folders(root)
    if split not in folders:
        have = ", ".join(f"{s}/" for s in folders)
        raise DataError(f"{root}: split {split!r}: no {split}/ folder here (found {have})")
    folder = folders[split]
    classes, reference = None, None
    for other, f in folders.items():
        if f == folder:
            continue
        classes = _agreeing_classes(Path(root), folder, f, split, other)
        if other == "train":
            train_files = (image_files(f / c) for c in classes)
            reference = next((fs[0] for fs in train_files if fs), None)
    return read_image_folder(folder, size, mode, classes=classes, reference=reference)


def _agreeing_classes(root: Path, folder: Path, other_folder: Path, split: str,
                      other: str) -> tuple[str, ...]:
    mine, theirs = class_names(folder), class_names(other_folder)
    if mine != theirs:
        only_mine = sorted(set(mine) - set(theirs))
        only_theirs = sorted(set(theirs) - set(mine))
        raise DataError(f"{root}: classes: {split}/ and {other}/ must have the same class "
                        f"folders; only in {split}/: {only_mine or '-'}, only in {other}/: "
                        f"{only_theirs or '-'}")
    return theirs
