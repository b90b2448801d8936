"""Accuracy of a model file from the file alone (``lowbit eval FILE``); no torch.

Runs the file through the same executor as ``lowbit run`` (``lowbit.runtime.graph.Runtime``):
binary / ternary / k-bit layers on the bitwise kernels; float layers in numpy; Deep-Compression
files decoded to dense float32 at load (codebook + sparse index + Huffman -> the exact
fine-tuned shared weights).
"""
from __future__ import annotations

import sys
from typing import Any



def evaluate_file(path: str, split: str = "test", root: str | None = None,
                  batch: int = 500) -> dict[str, Any]:
    """``{"accuracy", "n", "predictions", ...}`` of model file ``path`` on a Fashion-MNIST
    split (``root`` as in ``lowbit.data.find_root``)."""
    from lowbit.data import load as load_data
    from lowbit.runtime.graph import Runtime
    rt = Runtime(path)
    images, labels = load_data(split, root)
    pred = rt.predict(images, batch)
    return {"path": str(path), "split": split, "n": int(labels.size),
            "correct": int((pred == labels).sum()),
            "accuracy": float((pred == labels).mean()), "predictions": pred,
            "model": rt.meta.get("model")}


def eval_command(path: str, root: str | None = None) -> int:
    """Print the test accuracy of a model file; exit code 2 with one line on bad input."""
    from lowbit.codec import FormatError
    from lowbit.data import DataError
    try:
        r = evaluate_file(path, "test", root)
    except (FormatError, DataError, ValueError, KeyError, OSError) as e:
        print(f"lowbit eval: error: {e}", file=sys.stderr)
        return 2
    name = (r["model"] or {}).get("name", "model") if isinstance(r["model"], dict) else "model"
    print(f"{path}: {name} (model file, lowbit runtime): test accuracy "
          f"{r['accuracy']:.2%} ({r['correct']}/{r['n']})")
    return 0


__all__ = ["evaluate_file", "eval_command"]
