"""YOLO (ultralytics) detection data sets: read with :func:`load_yolo`, write with
:func:`write_labels` / :func:`write_data_yaml`.

Layout::

    ROOT/data.yaml                  path, train, val, test, nc, names (list, or dict 0: name)
    ROOT/images/<split>/*.png       images (any Pillow format), searched recursively
    ROOT/labels/<split>/*.txt       one line per box: ``class cx cy w h``, normalised to 0..1
    ROOT/motion/<split>/*.png       (lowbit's extension, with ``motion: k`` in data.yaml) each
                                    image's frame k frames earlier of the same video, gray

A split's value is a folder (relative to ``path``), a ``.txt`` file listing image paths, or a
list of these.  An image's label file is its path with the last ``images`` folder replaced by
``labels`` and the suffix by ``.txt``; a missing label file means no objects.  ``path`` is the
data-set root: absolute, or relative to the yaml's folder; absent (or an absolute path that does
not exist, e.g. a moved data set) means the yaml's folder.

``data.yaml`` is read by a small parser of the YAML subset these files use (PyYAML is not a
dependency): top-level ``key: value`` lines, ``#`` comments, quoted or bare scalars, flow lists
``[a, b]`` and maps ``{0: a}``, and indented block lists (``- a``) or maps (``0: a``) under a key.
Blocks under keys this reader does not use (``download: |`` ...) are skipped.

``motion: k`` (k >= 1 frames; absent or 0: none) marks a data set for a detector that sees
motion: :func:`load_yolo` appends each image's earlier frame (``motion_path``: the last
``images`` folder -> ``motion``, same file name) as one more, last, gray channel, and records
``k`` in the set's ``meta["motion"]``.  ``lowbit detect synth --videos N --motion k`` and
``lowbit detect autolabel --motion k`` write such sets; the pipeline feeds a model trained on
one the video's frame ``i - k`` (frame 0 for the first k frames, as these writers do).

Every malformed thing is a :class:`DataError` naming the file and line or field.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np

from .detset import IMAGE_SUFFIXES, DetectionSet, _pil, read_images
from .idx import DataError

__all__ = ["DetectionSet", "read_data_yaml", "load_yolo", "read_labels", "label_path",
           "write_labels", "write_data_yaml"]

_KEYS = ("path", "train", "val", "test", "nc", "names", "motion")


def _split_flow(text: str, where: str) -> list[str]:
    """Split ``a, 'b, c', "d"`` on commas outside quotes."""
    parts, cur, quote = [], "", None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    if quote:
        raise DataError(f"{where}: unterminated quote")
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _scalar(text: str, where: str):
    t = text.strip()
    if t[:1] == '"':
        try:
            return json.loads(t)
        except ValueError:
            raise DataError(f"{where}: bad double-quoted string {t}") from None
    if t[:1] == "'":
        if len(t) < 2 or t[-1] != "'":
            raise DataError(f"{where}: bad single-quoted string {t}")
        return t[1:-1].replace("''", "'")
    if t in ("", "~", "null", "Null", "NULL"):
        return None
    if t in ("true", "True", "false", "False"):
        return t.lower() == "true"
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", t):
        return float(t)
    return t


def _value(text: str, where: str):
    t = text.strip()
    if t.startswith("["):
        if not t.endswith("]"):
            raise DataError(f"{where}: flow list not closed with ]")
        return [_scalar(p, where) for p in _split_flow(t[1:-1], where)]
    if t.startswith("{"):
        if not t.endswith("}"):
            raise DataError(f"{where}: flow map not closed with }}")
        out = {}
        for p in _split_flow(t[1:-1], where):
            k, sep, v = p.partition(":")
            if not sep:
                raise DataError(f"{where}: expected 'key: value' in the flow map, got {p!r}")
            out[_scalar(k, where)] = _scalar(v, where)
        return out
    return _scalar(t, where)


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _block(lines: list[tuple[int, str]], path: Path):
    """An indented block under a key: a list (``- a``) or a map (``k: v``)."""
    items = [(n, t.strip()) for n, t in lines]
    if all(t.startswith("- ") or t == "-" for _, t in items):
        return [_value(t[1:], f"{path}: line {n}") for n, t in items]
    out = {}
    for n, t in items:
        k, sep, v = t.partition(":")
        if not sep or t.startswith("- "):
            raise DataError(f"{path}: line {n}: expected '- item' or 'key: value' lines "
                            f"under the key, got {t!r}")
        out[_scalar(k, f"{path}: line {n}")] = _value(v, f"{path}: line {n}")
    return out


def read_data_yaml(path: str | os.PathLike) -> dict:
    """The keys ``path, train, val, test, nc, names`` of a ``data.yaml`` (those present)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    out, key, block = {}, None, []
    for n, raw in enumerate(text.splitlines() + ["..."], 1):
        line = _strip_comment(raw)
        if not line.strip():
            continue
        if line[0] in " \t-":
            if key is None:
                raise DataError(f"{path}: line {n}: indented line without a key above it")
            block.append((n, line))
            continue
        if key in _KEYS and block:
            out[key] = _block(block, path)
        key, block = None, []
        if line in ("---", "..."):
            continue
        k, sep, v = line.partition(":")
        if not sep:
            raise DataError(f"{path}: line {n}: expected 'key: value', got {line!r}")
        k = k.strip()
        if k in _KEYS and v.strip() and v.strip() not in ("|", ">"):
            out[k] = _value(v, f"{path}: line {n}")
        else:
            key = k
    return out


def _names(cfg: dict, path: Path) -> tuple[str, ...]:
    names, nc = cfg.get("names"), cfg.get("nc")
    if isinstance(names, dict):
        keys = sorted(names, key=lambda k: (not isinstance(k, int), str(k)))
        if keys != list(range(len(names))):
            raise DataError(f"{path}: field 'names': expected keys 0..{len(names) - 1}, got "
                            f"{keys}")
        names = [names[k] for k in keys]
    if names is None:
        if not isinstance(nc, int) or nc < 1:
            raise DataError(f"{path}: field 'names': missing (and no usable 'nc')")
        names = [str(i) for i in range(nc)]
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: field 'names': expected a non-empty list or map, got {names!r}")
    if nc is not None and nc != len(names):
        raise DataError(f"{path}: field 'nc': {nc} but 'names' has {len(names)} entries")
    return tuple(str(v) for v in names)


def _root(cfg: dict, yaml_path: Path) -> Path:
    p = cfg.get("path")
    if p is None:
        return yaml_path.parent
    p = Path(str(p))
    if not p.is_absolute():
        return yaml_path.parent / p
    return p if p.is_dir() else yaml_path.parent


def _split_images(root: Path, entry, yaml_path: Path, split: str) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    files: list[Path] = []
    for e in entries:
        if not isinstance(e, str):
            raise DataError(f"{yaml_path}: field {split!r}: expected a path, got {e!r}")
        p = Path(e) if Path(e).is_absolute() else root / e
        if p.suffix == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
            files += [Path(ln) if Path(ln).is_absolute() else root / ln for ln in lines]
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES
                            and f.is_file() and not f.name.startswith("."))
        else:
            raise DataError(f"{yaml_path}: field {split!r}: {p} is neither a folder nor a .txt "
                            f"list of images")
    return files


def _sibling(image, folder: str) -> Path:
    parts = list(Path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = folder
            break
    return Path(*parts)


def label_path(image: str | os.PathLike) -> Path:
    """The label file of an image: last ``images`` folder -> ``labels``, suffix -> ``.txt``."""
    return _sibling(image, "labels").with_suffix(".txt")


def motion_path(image: str | os.PathLike) -> Path:
    """The earlier frame of an image of a ``motion`` data set: last ``images`` folder ->
    ``motion`` (module docstring)."""
    return _sibling(image, "motion")


def _motion_gap(cfg: dict, yaml_path: Path) -> int:
    k = cfg.get("motion", 0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise DataError(f"{yaml_path}: field 'motion': expected a number of frames >= 0, got "
                        f"{k!r}")
    return k


def read_labels(path: str | os.PathLike, nc: int) -> tuple[np.ndarray, np.ndarray]:
    """One label file: ``(cxcywh float32 (k, 4) normalised, classes int64 (k,))``; a missing
    file is no objects.  Each bad line is a :class:`DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    boxes, classes = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        where = f"{path}: line {n}"
        if len(cols) != 5:
            raise DataError(f"{where}: expected 5 columns 'class cx cy w h', got {len(cols)}")
        if not re.fullmatch(r"\d+", cols[0]):
            raise DataError(f"{where}: class: expected an integer >= 0, got {cols[0]!r}")
        c = int(cols[0])
        if c >= nc:
            raise DataError(f"{where}: class: {c} out of range (data.yaml names {nc} classes)")
        try:
            v = [float(x) for x in cols[1:]]
        except ValueError:
            raise DataError(f"{where}: expected numbers for cx cy w h, got {cols[1:]}") from None
        for name, x in zip(("cx", "cy", "w", "h"), v):
            if not math.isfinite(x) or (name in "wh" and x < 0):
                raise DataError(f"{where}: {name}: expected a size >= 0, got {x}"
                                if name in "wh" else f"{where}: {name}: not finite ({x})")
            if not 0.0 <= x <= 1.0:
                raise DataError(f"{where}: {name}: coordinates must be normalised to 0..1, "
                                f"got {x}")
        boxes.append(v)
        classes.append(c)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def _find_yaml(root: Path) -> Path:
    if root.is_file():
        return root
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no data.yaml here (a YOLO data set needs one with 'names' and "
                    f"the split folders)")


def load_yolo(root: str | os.PathLike, split: str = "train", *,
              size: tuple[int, int] | None = None) -> DetectionSet:
    """One split of a YOLO data set (``root``: its folder or its ``data.yaml``).

    Boxes come back in pixels ``x1, y1, x2, y2`` of the returned images; ``size=(W, H)``
    resizes every image of another size (boxes scaled too), else mixed sizes are an error."""
    yaml_path = _find_yaml(Path(root))
    cfg = read_data_yaml(yaml_path)
    names = _names(cfg, yaml_path)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split: expected train, val or test, got {split!r}")
    if cfg.get(split) is None:
        raise DataError(f"{yaml_path}: field {split!r}: missing")
    files = _split_images(_root(cfg, yaml_path), cfg[split], yaml_path, split)
    labels = [read_labels(label_path(f), len(names)) for f in files]
    boxes, classes = [], []
    for f, (b, c) in zip(files, labels):
        w, h = _image_size(f)
        xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                         b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
        xyxy = np.clip(xyxy, 0, 1) * np.array([w, h, w, h], np.float32)
        boxes.append(xyxy.astype(np.float32).reshape(-1, 4))
        classes.append(c)
    images = read_images(files, boxes, size)
    meta = {"yaml": yaml_path}
    gap = _motion_gap(cfg, yaml_path)
    if gap and len(files):
        earlier = [motion_path(f) for f in files]
        prev = read_images(earlier, [np.zeros((0, 4), np.float32) for _ in files], size,
                           channels=1)                                # (N, 1, H, W)
        if prev.shape[2:] != images.shape[2:]:
            raise DataError(f"{earlier[0]}: size: {prev.shape[3]}x{prev.shape[2]} (WxH) but its "
                            f"image {files[0]} is {images.shape[3]}x{images.shape[2]}")
        images = np.concatenate([images, prev], 1)                   # (N, C + 1, H, W)
        meta["motion"] = gap
    return DetectionSet(images, boxes, classes, names, tuple(files), meta)


def _image_size(path: Path) -> tuple[int, int]:
    Image = _pil()
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def write_labels(path: str | os.PathLike, xyxy, classes, size: tuple[int, int]) -> None:
    """Write one label file from pixel boxes ``x1, y1, x2, y2`` of an image of ``size=(W, H)``."""
    w, h = size
    lines = []
    for (x1, y1, x2, y2), c in zip(np.asarray(xyxy, np.float64).reshape(-1, 4), classes):
        lines.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                     f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n")
    Path(path).write_text("".join(lines))


def write_data_yaml(root: str | os.PathLike, names, *, train: str = "images/train",
                    val: str | None = None, path: str | os.PathLike | None = None,
                    comment: str = "", motion: int = 0) -> Path:
    """Write ``root/data.yaml`` (ultralytics keys); ``path`` defaults to ``root`` resolved;
    ``motion`` > 0 adds lowbit's ``motion`` key (module docstring)."""
    root = Path(root)
    head = "".join(f"# {c}\n" for c in comment.splitlines())
    text = (f"{head}path: {json.dumps(str(Path(path or root).resolve()))}\n"
            f"train: {train}\nval: {val or train}\nnc: {len(names)}\n"
            f"names: [{', '.join(json.dumps(str(n)) for n in names)}]\n"
            + (f"motion: {int(motion)}\n" if motion else ""))
    (root / "data.yaml").write_text(text)
    return root / "data.yaml"
