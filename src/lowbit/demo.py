"""``lowbit demo``: the main job end to end, small enough for a laptop.

For now: train the float LeNet-5 (Caffe form) on Fashion-MNIST for one epoch with a progress
bar, then print its test accuracy, parameter bytes and MACs.  Output goes to ``runs/demo``
(overwritten on every run).  Later issues grow the demo (quantized / binarized models, the
compressed file, the bitwise runtime).
"""
from __future__ import annotations

import sys
import time


def main(out: str = "runs/demo", epochs: int = 1, device: str = "auto",
         threads: int | None = None, data: str | None = None) -> int:
    import lowbit.train.commands  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
    from lowbit.data import DataError, load, train_val_split
    from lowbit.train.loop import evaluate, fit
    from lowbit.train.summary import summarize

    if threads:
        import torch
        torch.set_num_threads(threads)
    try:
        root = None if data in (None, "fashion-mnist") else data
        images, labels = load("train", root)
        test_images, test_labels = load("test", root)
    except DataError as e:
        print(f"lowbit demo: error: {e}", file=sys.stderr)
        return 2
    train, val = train_val_split(images, labels, val_size=5000, seed=0)
    print(f"lowbit demo: float LeNet-5 on Fashion-MNIST, {epochs} epoch(s), "
          f"{len(train[1])} training / {len(val[1])} validation / {len(test_labels)} test images")
    t0 = time.perf_counter()
    result = fit("lenet5", train, val, epochs=epochs, seed=0, device=device, out_dir=out,
                 overwrite=True)
    seconds = time.perf_counter() - t0
    acc = evaluate(result.model, test_images, test_labels)
    s = summarize(result.model)
    print(f"test accuracy   {acc:.2%}")
    print(f"parameters      {s.params:,} ({s.bytes_fp32:,} bytes as float32)")
    print(f"MACs per image  {s.macs:,}")
    print(f"training time   {seconds:.0f} s;  checkpoint {result.checkpoint}")
    return 0
