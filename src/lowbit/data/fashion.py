"""Fashion-MNIST (and real MNIST, which uses the same file names) from IDX files.

Where the files are looked for, first hit wins:

1. an explicit directory (``root=`` / ``lowbit train --data PATH``): only there;
2. the directory in ``$LOWBIT_DATA``;
3. ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist`` package).

A directory qualifies when it holds the four files, each either gzipped or raw::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

(the dotted spelling ``train-images.idx3-ubyte`` of some MNIST mirrors is accepted too).
Point ``root`` at a directory of real MNIST files, or call :func:`load_files` with explicit
paths, to use MNIST instead.

An explicit directory needs only the split that is asked for: the two ``t10k`` files are enough
for ``load("test", root)``, and asking such a folder for ``"train"`` says that only the test
files are there.  A split with one of its two files missing is an error whichever split is
asked for.  The search of 2. and 3. still wants all four files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .idx import DataError, read_idx

__all__ = ["DEFAULT_DIR", "ENV_VAR", "FILES", "CLASSES", "NUM_CLASSES", "find_root", "load",
           "load_files", "idx_splits", "has_idx_files"]

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "LOWBIT_DATA"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
NUM_CLASSES = 10


def _candidates(name: str) -> list[str]:
    dotted = name.replace("-idx", ".idx", 1)
    return [name, name + ".gz", dotted, dotted + ".gz"]


def _find_file(directory: Path, name: str) -> Path | None:
    for cand in _candidates(name):
        p = directory / cand
        if p.is_file():
            return p
    return None


def _complete(directory: Path) -> bool:
    return all(_find_file(directory, n) is not None for pair in FILES.values() for n in pair)


def find_root(root: str | os.PathLike | None = None) -> Path:
    """Return the directory holding the four IDX files, or raise :class:`DataError`.

    The error lists every place looked in and the file names that are needed.
    """
    if root is not None:
        tried = [("explicit path", Path(root))]
    else:
        tried = []
        env = os.environ.get(ENV_VAR)
        if env:
            tried.append((f"${ENV_VAR}", Path(env)))
        tried.append(("default", DEFAULT_DIR))
    for _, d in tried:
        if d.is_dir() and _complete(d):
            return d
    needed = " ".join(n for pair in FILES.values() for n in pair)
    looked = "; ".join(f"{label} {d} ({_why_not(d)})" for label, d in tried)
    hint = "" if root is not None else f" or set {ENV_VAR} to a folder that has them"
    raise DataError(
        f"Fashion-MNIST files not found. Looked in: {looked}. Needed (each raw or .gz): "
        f"{needed}. Put them in one folder and pass it as the data path{hint} "
        f"(on Debian: apt-get install dataset-fashion-mnist).")


def has_idx_files(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds at least one of the four IDX file names."""
    d = Path(directory)
    return d.is_dir() and any(_find_file(d, n) is not None for p in FILES.values() for n in p)


def idx_splits(directory: str | os.PathLike) -> tuple[str, ...]:
    """The splits (``"train"``, ``"test"``) whose two IDX files are both in ``directory``."""
    d = Path(directory)
    return tuple(s for s, pair in FILES.items() if all(_find_file(d, n) for n in pair))


def _explicit_root(d: Path, split: str) -> Path:
    """``d`` when it has the files of ``split`` and no half split; else a clear DataError."""
    if not d.is_dir():
        return find_root(d)  # raises, saying what is wrong with the path
    half = [n for pair in FILES.values() if any(_find_file(d, n) for n in pair)
            for n in pair if _find_file(d, n) is None]
    if half:
        raise DataError(
            f"IDX files incomplete. Looked in: explicit path {d} (missing {', '.join(half)}). "
            f"Each split needs its images and its labels file (each raw or .gz): "
            f"{' '.join(n for pair in FILES.values() for n in pair)}.")
    if split in idx_splits(d):
        return d
    others = idx_splits(d)
    if others:
        have = " and ".join(f for s in others for f in FILES[s])
        raise DataError(
            f"{d}: split {split!r}: this IDX folder has only the {', '.join(others)} files "
            f"({have}); needed {' and '.join(FILES[split])} (each raw or .gz)")
    return find_root(d)  # raises with the usual list of needed files


def _why_not(d: Path) -> str:
    if not d.exists():
        return "does not exist"
    if not d.is_dir():
        return "not a directory"
    missing = [n for pair in FILES.values() for n in pair if _find_file(d, n) is None]
    return "missing " + ", ".join(missing)


def load(split: str = "train", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split: ``images`` uint8 ``(N, 28, 28)`` and ``labels`` int64 ``(N,)``.

    ``split`` is ``"train"`` (60 000 images) or ``"test"`` (10 000); ``root`` as in
    :func:`find_root`, except that an explicit ``root`` only needs the files of ``split``.
    """
    if split not in FILES:
        raise ValueError(f"split: expected one of {', '.join(FILES)}, got {split!r}")
    d = find_root(root) if root is None else _explicit_root(Path(root), split)
    img_name, lab_name = FILES[split]
    return load_files(_find_file(d, img_name), _find_file(d, lab_name))


def load_files(images_path: str | os.PathLike, labels_path: str | os.PathLike,
               num_classes: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Load an explicit pair of IDX files (e.g. real MNIST anywhere on disk).

    Images must be uint8 ``(N, 28, 28)``, labels uint8 ``(N,)`` with values below
    ``num_classes``; anything else raises :class:`DataError` naming the file.
    """
    images = read_idx(images_path, dtype="uint8", shape=(None, 28, 28))
    labels = read_idx(labels_path, dtype="uint8", rank=1)
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: count: expected {len(images)} labels (one per image in "
            f"{images_path}), got {len(labels)}")
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(
            f"{labels_path}: labels: expected values 0..{num_classes - 1}, got {int(labels.max())}")
    return images, labels.astype(np.int64)
