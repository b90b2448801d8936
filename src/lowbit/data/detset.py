"""Detection data sets: the :class:`DetectionSet` container the YOLO and COCO readers return,
image reading for them (Pillow), and :func:`atomic_dir` for writing a data-set folder whole.

Conventions shared by every reader and writer of boxes in this package:

* pixel coordinates are continuous, the image spans ``[0, W] x [0, H]`` and pixel ``(col, row)``
  covers ``[col, col + 1) x [row, row + 1)``; so a box ``x1, y1, x2, y2`` has ``x2, y2``
  exclusive, exactly like :class:`lowbit.detect.Detections`, and the tight box of a pixel mask
  is ``(min col, min row, max col + 1, max row + 1)``;
* sizes are given as ``(W, H)`` (OpenCV order) wherever this module and its readers take one.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .idx import DataError

__all__ = ["DetectionSet", "IMAGE_SUFFIXES", "read_images", "atomic_dir"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_GRAY = {"1", "L", "LA", "La"}


@dataclass
class DetectionSet:
    """Images with their boxes.

    ``images`` uint8 ``(N, C, H, W)`` (C = 1 or 3, every image one size); ``boxes[i]`` float32
    ``(k_i, 4)`` as ``x1, y1, x2, y2`` pixels of image ``i``; ``classes[i]`` int64 ``(k_i,)``
    indices into ``names``; ``files[i]`` the image's path; ``meta`` reader-specific extras (COCO:
    ``image_ids``, ``category_ids``)."""

    images: np.ndarray
    boxes: list
    classes: list
    names: tuple
    files: tuple
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_boxes(self) -> int:
        return int(sum(len(b) for b in self.boxes))


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise DataError("reading images needs Pillow: pip install 'pillow>=9'") from None
    return Image


def _open_image(path: Path, channels: int | None):
    """``(array (C, H, W) uint8, original (W, H))``; ``channels`` None: the file decides."""
    Image = _pil()
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith(("I", "F")):
                raise DataError(f"{path}: mode: expected 8-bit gray or colour pixels, got "
                                f"Pillow mode {im.mode!r}")
            c = channels or (1 if im.mode in _GRAY else 3)
            im = im.convert("L" if c == 1 else "RGB")
            a = np.asarray(im, np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return np.ascontiguousarray(a), (a.shape[2], a.shape[1])


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    Image = _pil()
    w, h = size
    planes = [np.asarray(Image.fromarray(p).resize((w, h), Image.BILINEAR)) for p in a]
    return np.stack(planes)


def read_images(files, boxes, size: tuple[int, int] | None = None,
                expected: dict | None = None, channels: int | None = None) -> np.ndarray:
    """Read ``files`` into uint8 ``(N, C, H, W)``; ``boxes`` (list of (k, 4) float32 pixel boxes
    of the original images) are scaled in place when ``size=(W, H)`` resizes an image.

    The first image decides the channels (gray files give 1, any other mode 3; later images
    are converted to match).  Without ``size`` an image of another size than the first is a
    :class:`DataError` naming both files and sizes.  ``expected`` maps an index to the
    ``(W, H)`` the annotation file claims for it (checked, mismatch is a :class:`DataError`).
    ``channels`` (1 or 3) converts every image to gray or RGB instead.
    """
    files = [Path(f) for f in files]
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size: expected (W, H) >= 1, got {size}")
    out, first = [], None
    for i, f in enumerate(files):
        a, wh = _open_image(f, channels)
        channels = channels or a.shape[0]
        if expected and i in expected and tuple(expected[i]) != wh:
            raise DataError(f"{f}: size: the annotations say {expected[i][0]}x{expected[i][1]} "
                            f"(WxH) but the image is {wh[0]}x{wh[1]}")
        target = tuple(size) if size is not None else (first[1] if first else wh)
        first = first or (f, wh)
        if wh != target:
            if size is None:
                raise DataError(f"{f}: size: {wh[0]}x{wh[1]} (WxH) but {first[0]} is "
                                f"{target[0]}x{target[1]}; pass size=(W, H) to resize all")
            a = _resize(a, target)
            if len(boxes[i]):
                boxes[i] = (boxes[i] * np.array([target[0] / wh[0], target[1] / wh[1]] * 2,
                                                np.float32)).astype(np.float32)
        out.append(a)
    if not out:
        c, (w, h) = channels or 3, (size or (0, 0))
        return np.zeros((0, c, h, w), np.uint8)
    return np.stack(out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike, overwrite: bool = False):
    """Write a folder whole: yields a temporary folder next to ``out_dir``, renamed to
    ``out_dir`` when the block ends without error (removed if it fails).

    An existing non-empty ``out_dir`` is refused (:class:`FileExistsError`) unless
    ``overwrite``, in which case it is replaced only once the new folder is complete."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (pass overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a data set is shared like a mkdir
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
