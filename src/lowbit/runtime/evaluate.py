"""Accuracy of a model file from the file alone (``lowbit eval FILE`` = ``lowbit run FILE``); no
torch.

Runs the file through the graph executor (``lowbit.runtime.graph.Runtime``): binary / ternary /
k-bit layers on the bitwise kernels; float layers in numpy; Deep-Compression files decoded to
dense float32 at load (codebook + sparse index + Huffman -> the exact fine-tuned shared
weights).  Data: anything ``lowbit.data.load`` reads; an image folder is resized to the file's
input size.
"""
from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["evaluate_file", "file_accuracy", "file_command", "eval_command", "not_a_model_file"]

ZIP_MAGIC = b"PK\x03\x04"        # torch.save files are zip archives


def not_a_model_file(path: str) -> str | None:
    """Why ``path`` cannot be a model file, when that is easy to say (a checkpoint, a folder);
    else None (the container reader then says what is wrong)."""
    from pathlib import Path
    p = Path(path)
    if p.is_dir():
        hint = " (a training run folder? its checkpoint.pt is a checkpoint)" \
            if (p / "checkpoint.pt").is_file() else ""
        return f"{path}: is a folder, expected a lowbit model file{hint}"
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if head == ZIP_MAGIC:
        return (f"{path}: is a PyTorch checkpoint, not a lowbit model file; export it first "
                f"(lowbit export {path} -o model.lbm), or evaluate it with torch "
                f"(lowbit eval {path})")
    return None


def _input_shape(rt) -> tuple | None:
    shape = rt.inputs[0].get("shape")
    return tuple(shape) if shape and len(shape) == 3 else None


def _test_data(rt, root: str | None, split: str = "test"):
    """The split, an image folder resized to the file's input H x W; a shape the file cannot
    take is one clear error."""
    from lowbit.data import data_kind, load
    shape = _input_shape(rt)
    kind = data_kind(root)
    size = tuple(shape[1:]) if shape is not None and kind == "image-folder" else None
    images, labels = load(split, root, size=size)
    got = (1, *images.shape[1:]) if images.ndim == 3 else tuple(images.shape[1:])
    if shape is not None and got != shape:
        raise ValueError(f"{root or 'fashion-mnist'}: the {split} images are "
                         f"{'x'.join(map(str, got))} (CxHxW), the model file takes "
                         f"{'x'.join(map(str, shape))}")
    return images, labels


def evaluate_file(path: str, split: str = "test", root: str | None = None,
                  batch: int = 500, threads: int = 1, limit: int | None = None) -> dict[str, Any]:
    """``{"accuracy", "n", "correct", "predictions", "seconds", ...}`` of model file ``path`` on
    a split of ``root`` (None: Fashion-MNIST's default search), its first ``limit`` images."""
    from lowbit.runtime.graph import Runtime
    why = not_a_model_file(path)
    if why:
        raise ValueError(why)
    if limit is not None and limit < 1:
        raise ValueError(f"limit: expected an integer >= 1, got {limit}")
    rt = Runtime(path, threads)
    images, labels = _test_data(rt, root, split)
    if limit:
        images, labels = images[:limit], labels[:limit]
    t0 = time.perf_counter()
    pred = rt.predict(images, batch)
    dt = time.perf_counter() - t0
    return {"path": str(path), "split": split, "n": int(labels.size),
            "correct": int((pred == labels).sum()),
            "accuracy": float((pred == labels).mean()) if labels.size else 0.0,
            "predictions": pred, "seconds": dt, "threads": rt.threads,
            "model": rt.meta.get("model")}


def file_accuracy(path: str, images, labels, threads: int = 1) -> float:
    """Accuracy of model file ``path`` on given uint8 images (``lowbit compress`` checks the
    file it wrote with this, as users will run it)."""
    from lowbit.runtime.graph import Runtime
    pred = Runtime(path, threads).predict(images)
    return float((pred == labels).mean())


def file_command(path: str, data: str | None = None, threads: int = 1,
                 limit: int | None = None, cmd: str = "eval") -> int:
    """``lowbit eval FILE`` / ``lowbit run FILE``: print the test accuracy of a model file
    through the runtime; exit code 2 with one ``lowbit CMD: error:`` line on bad input."""
    from lowbit.codec import FormatError
    from lowbit.data import DataError
    from lowbit.runtime import bitconv
    root = None if data in (None, "", "fashion-mnist") else data
    try:
        r = evaluate_file(path, "test", root, threads=threads, limit=limit)
    except (FormatError, DataError, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lowbit {cmd}: error: {msg}", file=sys.stderr)
        return 2
    name = r["model"].get("name", "model") if isinstance(r["model"], dict) else "model"
    print(f"{path}: {name} (model file, lowbit runtime): test accuracy {r['accuracy']:.2%} "
          f"({r['correct']}/{r['n']}) in {r['seconds']:.2f} s, {r['threads']} thread(s), "
          f"kernels {bitconv.conv_kernel_name()}")
    return 0


def eval_command(path: str, root: str | None = None) -> int:
    """Kept for callers of the old name: :func:`file_command` with the defaults."""
    return file_command(path, root)
