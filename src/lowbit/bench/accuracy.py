"""Accuracy benchmark of the low-bit recipes on Fashion-MNIST (``lowbit bench accuracy``).

Trains every entry of ``RUNS`` with the protocol of ``lowbit train`` (55 000 training images,
5 000 held out for validation, seed 0, the recipe's default settings), evaluates the 10 000 test
images once after the last epoch (no model selection),
writes ``OUT/<label>/checkpoint.pt`` + ``result.json`` per run and the table of all finished
runs into docs/results.md (section ``## Low-bit accuracy (Fashion-MNIST)``).  A run whose
``result.json`` exists is not trained again (``--force`` retrains), so the benchmark can be
run piecewise on a busy machine: ``--only bnn-lenet5,xnor-lenet5``.  The float LeNet-5
reference is taken from ``--reference`` (a ``lowbit train --model lenet5`` run folder with its
``result.json``) when that exists, else trained here.

Imports torch only through ``lowbit.train``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

__all__ = ["RUNS", "run", "write_results", "add_arguments", "run_all", "main"]

SECTION = "## Low-bit accuracy (Fashion-MNIST)"

# label, registry name, kwargs, method description, W-A-G bits[, fit overrides]
RUNS = [
    ("lenet5", "lenet5", {}, "float LeNet-5 (reference)", "32-32-32"),
    ("bwn-lenet5", "bwn-lenet5", {}, "BWN: binary weights, alpha per channel", "1-32-32"),
    ("twn-lenet5", "twn-lenet5", {}, "TWN: ternary weights, per layer", "2-32-32"),
    ("twn5-lenet5", "twn-lenet5", {"levels": 5}, "five-level {-2..2}*alpha weights", "3-32-32"),
    ("dorefa-1-2-6", "dorefa-lenet5", {"bits": "1,2,6"}, "DoReFa-Net", "1-2-6"),
    ("dorefa-2-2-32", "dorefa-lenet5", {"bits": "2,2,32"}, "DoReFa-Net", "2-2-32"),
    ("dorefa-4-4-32", "dorefa-lenet5", {"bits": "4,4,32"}, "DoReFa-Net", "4-4-32"),
    ("xnor-lenet5", "xnor-lenet5", {}, "XNOR-Net, blocks B-A-C-P", "1-1-32"),
    ("xnor-lenet5-cbap", "xnor-lenet5", {"order": "CBAP"}, "XNOR-Net, blocks C-B-A-P", "1-1-32"),
    ("xnor-lenet5-s1", "xnor-lenet5", {}, "XNOR-Net, blocks B-A-C-P, seed 1", "1-1-32",
     {"seed": 1}),
    ("xnor-lenet5-cbap-s1", "xnor-lenet5", {"order": "CBAP"}, "XNOR-Net, blocks C-B-A-P, seed 1",
     "1-1-32", {"seed": 1}),
    ("bnn-lenet5", "bnn-lenet5", {}, "BNN LeNet-5", "1-1-32"),
    ("bnn-lenet5-bitplane", "bnn-lenet5", {"first_layer": "bitplane"},
     "BNN LeNet-5, 8-bit bit-plane first layer (Algorithm 4)", "1-1-32 (first layer 1-8)"),
    ("bnn-mlp", "bnn-mlp", {}, "BNN MLP 784-3x1024-10", "1-1-32"),
    ("bnn-vgg-small", "bnn-vgg-small", {}, "BNN VGG-small (conv-heavy)", "1-1-32",
     {"train_size": 10000, "epochs": 1}),
]


def run(label: str, name: str, kwargs: dict, out: Path, threads: int | None, epochs=None,
        train_size: int | None = None, force: bool = False, seed: int = 0) -> dict:
    """Train one entry (or return its stored result) and return the result dict."""
    from lowbit.data import load, subset, train_val_split
    from lowbit.train.loop import evaluate, fit
    from lowbit.train.summary import summarize

    res_file = out / label / "result.json"
    if res_file.exists() and not force:
        return json.loads(res_file.read_text())
    tr, va = train_val_split(*load("train"), val_size=5000, seed=0)
    if train_size:
        tr = subset(*tr, train_size, seed=0)
    test_x, test_y = load("test")
    t0 = time.perf_counter()
    result = fit(name, tr, va, kwargs=kwargs, epochs=epochs, threads=threads, seed=seed,
                 out_dir=out / label, overwrite=True, device="cpu")
    wall = time.perf_counter() - t0
    acc = evaluate(result.model, test_x, test_y)
    s = summarize(result.model)
    info = {"label": label, "model": name, "kwargs": kwargs, "test_acc": acc,
            "epochs": result.config["epochs"], "wall_seconds": round(wall, 1),
            "train_size": len(tr[1]), "packed_bytes": s.packed_bytes, "bytes_fp32": s.bytes_fp32,
            "bops": sum(r.extra.get("BOPs", 0) for r in s.rows),
            "float_macs": sum(r.extra.get("float MACs", r.macs) for r in s.rows),
            "seed": seed, "config": result.config, "history": result.history,
            "checkpoint": str(result.checkpoint), "threads": threads}
    res_file.write_text(json.dumps(info, indent=1, default=str) + "\n")
    print(f"{label}: test {acc:.2%}  {info['epochs']} epochs  {wall:.0f} s", file=sys.stderr)
    return info


def _table(results: dict[str, dict]) -> str:
    ref = results.get("lenet5", {}).get("test_acc")
    lines = ["| method | recipe | W-A-G bits | test acc | diff vs float LeNet-5 | packed weight KB "
             "| fp32 KB | epochs | wall time |", "|---|---|---|---|---|---|---|---|---|"]
    for label, name, kwargs, method, bits, *_ in RUNS:
        r = results.get(label)
        if r is None:
            continue
        diff = "0 (reference)" if label == "lenet5" else (
            f"{100 * (r['test_acc'] - ref):+.2f}" if ref is not None else "n/a")
        args = " ".join(f"{k}={v}" for k, v in kwargs.items())
        sub = f" ({r['train_size']} images)" if r.get("train_size", 55000) < 55000 else ""
        lines.append(f"| {method} | `{name}{' ' + args if args else ''}` | {bits} | "
                     f"{100 * r['test_acc']:.2f}% | {diff} | {r['packed_bytes'] / 1024:.1f} | "
                     f"{r['bytes_fp32'] / 1024:.1f} | {r['epochs']}{sub} | "
                     f"{r['wall_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def write_results(results: dict[str, dict], path: Path, notes: str = "") -> None:
    """Replace (or append) the SECTION of ``path`` with the table and ``notes``."""
    body = (f"{SECTION}\n\nWritten by `lowbit bench accuracy` (lowbit.bench.accuracy).  Protocol "
            f"of `lowbit train`: 55 000 training images (5 000 held out for validation), recipe "
            f"defaults, seed 0, CPU (2 threads on a 2-core machine shared with other jobs, so wall "
            f"times are upper bounds); test accuracy on the 10 000 test images after the last "
            f"epoch (no model selection).  "
            f"Packed KB: every parameter in its trained width (binary weights 1 bit, rows padded "
            f"to 64-bit words, scales/BatchNorm/first and last layers fp32).\n\n"
            f"{_table(results)}\n{notes}")
    text = path.read_text() if path.exists() else "# Results\n"
    pat = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    text = pat.sub(lambda _: body.rstrip() + "\n", text) if pat.search(text) else \
        text.rstrip() + "\n\n" + body.rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/accuracy", help="run folders (default %(default)s)")
    p.add_argument("--results", default="docs/results.md", help="markdown file to update")
    p.add_argument("--only", default=None, help="comma-separated labels: " +
                   ", ".join(r[0] for r in RUNS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    p.add_argument("--train-size", type=int, default=None, help="train on a subset (smoke runs)")
    p.add_argument("--force", action="store_true", help="retrain runs that already have results")
    p.add_argument("--notes", default="docs/accuracy-notes.md",
                   help="markdown appended below the table, if the file exists")
    p.add_argument("--reference", default="runs/lenet5-float",
                   help="a finished `lowbit train --model lenet5` run to use as the float reference")


def run_all(a: argparse.Namespace) -> int:
    only = set(a.only.split(",")) if a.only else None
    unknown = (only or set()) - {r[0] for r in RUNS}
    if unknown:
        print(f"lowbit bench accuracy: error: --only: unknown labels {', '.join(sorted(unknown))}",
              file=sys.stderr)
        return 2
    outdir = Path(a.out)
    results = {}
    ref = Path(a.reference) / "result.json"
    if ref.exists() and not (outdir / "lenet5" / "result.json").exists():
        r = json.loads(ref.read_text())
        (outdir / "lenet5").mkdir(parents=True, exist_ok=True)
        (outdir / "lenet5" / "result.json").write_text(json.dumps({
            "label": "lenet5", "model": "lenet5", "kwargs": {}, "test_acc": r["test_acc"],
            "epochs": r["epochs"], "wall_seconds": r["train_seconds_all_epochs"],
            "train_size": r["config"]["train_size"], "packed_bytes": r["bytes_fp32"],
            "bytes_fp32": r["bytes_fp32"], "bops": 0, "float_macs": r["macs"],
            "checkpoint": r["checkpoint"], "source": str(ref)}, indent=1) + "\n")
    for label, name, kwargs, _, _, *over in RUNS:
        over = over[0] if over else {}
        if only is None or label in only:
            results[label] = run(label, name, kwargs, outdir, a.threads,
                                 a.epochs or over.get("epochs"),
                                 a.train_size or over.get("train_size"), a.force,
                                 over.get("seed", 0))
        elif (outdir / label / "result.json").exists():
            results[label] = json.loads((outdir / label / "result.json").read_text())
    notes = Path(a.notes).read_text() if a.notes and Path(a.notes).exists() else ""
    write_results(results, Path(a.results), notes)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lowbit bench accuracy", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_all(p.parse_args(argv))
