"""COCO detection JSON: :func:`load_coco` reads ``images``, ``annotations`` and ``categories``.

* ``images``: ``{"id", "file_name", "width"?, "height"?}``; files are ``images_dir/file_name``
  (``images_dir`` defaults to the JSON's folder); a stated width / height must match the file.
* ``categories``: ``{"id", "name"}``; sorted by id, category ``j`` of that order is class ``j``
  (contiguous indices), its name ``names[j]``; ``meta["category_ids"][j]`` maps back.
* ``annotations``: ``{"image_id", "category_id", "bbox": [x, y, w, h]}`` in pixels (top-left +
  size); crowd annotations (``iscrowd: 1``) and zero-size boxes are skipped; a missing
  ``annotations`` list means no boxes (a test-set file).  Boxes come back ``x1, y1, x2, y2``.

Each malformed thing is a :class:`DataError` naming the file and the field, e.g.
``ann.json: annotations[3].image_id: unknown image id 17``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .detset import DetectionSet, read_images
from .idx import DataError

__all__ = ["DetectionSet", "load_coco"]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations, categories")
    return data


def _list(data: dict, path: Path, key: str, required: bool = True) -> list:
    if key not in data:
        if required:
            raise DataError(f"{path}: field {key!r}: missing")
        return []
    v = data[key]
    if not isinstance(v, list):
        raise DataError(f"{path}: field {key!r}: expected a list, got {type(v).__name__}")
    return v


def _get(item, path: Path, where: str, key: str, kind):
    if not isinstance(item, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(item).__name__}")
    if key not in item:
        raise DataError(f"{path}: {where}.{key}: missing")
    v = item[key]
    if kind is int and (not isinstance(v, int) or isinstance(v, bool)):
        raise DataError(f"{path}: {where}.{key}: expected an integer, got {v!r}")
    if kind is str and not isinstance(v, str):
        raise DataError(f"{path}: {where}.{key}: expected a string, got {v!r}")
    return v


def _categories(cats: list, path: Path) -> tuple[dict[int, int], tuple[str, ...], tuple]:
    by_id = {}
    for j, c in enumerate(cats):
        cid = _get(c, path, f"categories[{j}]", "id", int)
        if cid in by_id:
            raise DataError(f"{path}: categories[{j}].id: duplicate category id {cid}")
        by_id[cid] = str(_get(c, path, f"categories[{j}]", "name", str))
    if not by_id:
        raise DataError(f"{path}: field 'categories': expected at least one category")
    ids = tuple(sorted(by_id))
    return {cid: i for i, cid in enumerate(ids)}, tuple(by_id[c] for c in ids), ids


def _images(imgs: list, path: Path, images_dir: Path):
    index, files, sizes = {}, [], {}
    for i, im in enumerate(imgs):
        iid = _get(im, path, f"images[{i}]", "id", int)
        if iid in index:
            raise DataError(f"{path}: images[{i}].id: duplicate image id {iid}")
        name = _get(im, path, f"images[{i}]", "file_name", str)
        f = images_dir / name
        if not f.is_file():
            raise DataError(f"{path}: images[{i}].file_name: {f} not found")
        w, h = im.get("width"), im.get("height")
        if w is not None or h is not None:
            for k, v in (("width", w), ("height", h)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise DataError(f"{path}: images[{i}].{k}: expected an integer >= 1, "
                                    f"got {v!r}")
            sizes[i] = (w, h)
        index[iid] = i
        files.append(f)
    return index, files, sizes


def _bbox(a, path: Path, where: str, wh: tuple[int, int] | None) -> list[float] | None:
    b = _get(a, path, where, "bbox", list)
    if (not isinstance(b, list) or len(b) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)):
        raise DataError(f"{path}: {where}.bbox: expected 4 numbers [x, y, w, h], got {b!r}")
    x, y, w, h = (float(v) for v in b)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise DataError(f"{path}: {where}.bbox: not finite: {b!r}")
    if w < 0 or h < 0:
        raise DataError(f"{path}: {where}.bbox: negative size w={w} h={h}")
    if wh is not None and (x < -1 or y < -1 or x + w > wh[0] + 1 or y + h > wh[1] + 1):
        raise DataError(f"{path}: {where}.bbox: {b!r} lies outside the {wh[0]}x{wh[1]} image")
    if w == 0 or h == 0:
        return None
    return [x, y, x + w, y + h]


def load_coco(json_path: str | os.PathLike, images_dir: str | os.PathLike | None = None, *,
              size: tuple[int, int] | None = None) -> DetectionSet:
    """Read a COCO detection JSON and its images into a :class:`DetectionSet`.

    ``size=(W, H)`` resizes images of another size (boxes scaled); without it mixed sizes
    are a :class:`DataError`.  ``meta``: ``image_ids`` (per image) and ``category_ids``."""
    path = Path(json_path)
    data = _read_json(path)
    cmap, names, cat_ids = _categories(_list(data, path, "categories"), path)
    imgs = _list(data, path, "images")
    index, files, sizes = _images(imgs, path, Path(images_dir) if images_dir else path.parent)
    boxes = [[] for _ in files]
    classes = [[] for _ in files]
    for k, a in enumerate(_list(data, path, "annotations", required=False)):
        where = f"annotations[{k}]"
        iid = _get(a, path, where, "image_id", int)
        if iid not in index:
            raise DataError(f"{path}: {where}.image_id: unknown image id {iid}")
        cid = _get(a, path, where, "category_id", int)
        if cid not in cmap:
            raise DataError(f"{path}: {where}.category_id: unknown category id {cid}")
        i = index[iid]
        box = _bbox(a, path, where, sizes.get(i))
        if box is None or a.get("iscrowd", 0):
            continue
        boxes[i].append(box)
        classes[i].append(cmap[cid])
    boxes = [np.array(b, np.float32).reshape(-1, 4) for b in boxes]
    images = read_images(files, boxes, size, expected=sizes)
    h, w = images.shape[2:] if len(images) else (0, 0)
    for b in boxes:  # boxes may overhang by up to a pixel: clip to the image
        np.clip(b[:, 0::2], 0, w, out=b[:, 0::2])
        np.clip(b[:, 1::2], 0, h, out=b[:, 1::2])
    classes = [np.array(c, np.int64) for c in classes]
    ids = tuple(_get(im, path, f"images[{i}]", "id", int) for i, im in enumerate(imgs))
    return DetectionSet(images, boxes, classes, names, tuple(files),
                        {"image_ids": ids, "category_ids": cat_ids})
