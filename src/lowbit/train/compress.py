"""``lowbit compress``: the Deep Compression pipeline on a float checkpoint.

1. prune (``lowbit.train.prune``): magnitude pruning with masks and rising thresholds, either
   gradual (one retraining run, masks tightened every 50 steps; default) or iterative
   (prune -> retrain rounds);
2. quantize (``lowbit.train.share``): per-layer k-means weight sharing, then centroid
   fine-tuning;
3. encode (``lowbit.codec``): relative sparse index + codebook indices, fixed-width or Huffman,
   into one model file that ``lowbit eval FILE`` runs from the file alone.

Sizes are whole-file sizes of real encodings (header, codebooks, index, code tables, padding:
every byte): P = pruned float32 weights + fixed-width index; P+Q = codebook indices +
fixed-width index; P+Q+H = both streams Huffman coded.  Ratio = fp32 parameter bytes / file
bytes.  Layer specs (``--prune``, ``--bits``, ``--index-bits``) are ``VALUE`` or
``key=VALUE,...`` with key a layer name, ``conv``, ``fc`` or ``*`` (name beats kind beats *).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lowbit import codec
from lowbit.data import load, subset, train_val_split

from . import prune, share
from .checkpoint import load_model
from .export import build_graph
from .loop import evaluate, fit

# Per-model defaults, tuned on Fashion-MNIST (docs/results.md "Deep Compression"): sparsity
# per layer, weight bits, index bits, epochs, codebook / bias storage.  The paper's settings
# (Han et al. 2016, Tables 2-3), for comparison: LeNet-300-100 prune fc1=0.92,fc2=0.91,fc3=0.74
# with 6-bit weights; LeNet-5 conv1=0.34,conv2=0.88,fc1=0.92,fc2=0.81, conv 8 / fc 5 bits; 5-bit
# index for both.  On Fashion-MNIST those lose ~1 point; moving weights from fc1 to fc2 (and
# keeping the tiny conv1 dense) and using fewer weight bits does better at the same size.
PRESETS: dict[str, dict[str, Any]] = {
    "lenet300": {"prune": "fc1=0.93,fc2=0.75,fc3=0.5", "bits": "fc1=4,fc2=4,fc3=5",
                 "index_bits": "5", "prune_epochs": 8, "share_epochs": 1,
                 "codebook_dtype": "f2", "bias_dtype": "f2"},
    "lenet5": {"prune": "conv1=0,conv2=0.88,fc1=0.92,fc2=0.81", "bits": "conv=6,fc1=3,fc2=5",
               "index_bits": "5", "prune_epochs": 5, "share_epochs": 1,
               "codebook_dtype": "f2", "bias_dtype": "f2"},
}
GENERIC: dict[str, Any] = {"prune": "0.9", "bits": "conv=8,fc=5", "index_bits": "conv=8,fc=5",
                           "prune_epochs": 6, "share_epochs": 1, "codebook_dtype": "f4",
                           "bias_dtype": "f4"}


@dataclass
class Options:
    # None = the model's preset (PRESETS, else GENERIC)
    prune: str | None = None           # layer spec of sparsities or "<q>std"
    bits: str | None = None            # weight bits per layer (0 = no sharing)
    index_bits: str | None = None      # relative-index bits per layer
    huffman: bool = False              # write the P+Q+H encoding (else P+Q)
    schedule: str = "gradual"          # gradual: one run, sparsity rising every 50 steps;
                                       # iterative: prune_steps x (prune, retrain)
    prune_steps: int = 3               # iterative only
    prune_epochs: int | None = None    # gradual: the whole run; iterative: per step
    gradual_end: float = 0.6           # gradual: targets reached at this fraction of the run
    share_epochs: int | None = None    # centroid fine-tuning epochs
    lr_prune: float = 1e-3
    lr_share: float = 1e-4
    batch_size: int = 128
    init: str = "linear"               # k-means init: linear | random | density
    codebook_dtype: str | None = None  # f4 | f2
    bias_dtype: str | None = None      # f4 | f2
    seed: int = 0
    threads: int | None = None
    sensitivity: str | None = None     # folder for the sensitivity table + plot
    data: str | None = None            # data folder (None = default search)
    max_train: int | None = None       # subsample (quick runs / tests)
    max_test: int | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)


def parse_spec(text: str | None) -> dict[str, str]:
    """``"0.9"`` -> ``{"*": "0.9"}``; ``"conv=8,fc=5"`` -> ``{"conv": "8", "fc": "5"}``."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.rpartition("=")
        out[key.strip() or "*"] = value.strip()
    return out


def resolve(spec: str, layers: Mapping[str, nn.Module], what: str) -> dict[str, str]:
    """Per-layer values of a spec (name beats kind beats ``*``); unknown keys are errors."""
    table = parse_spec(spec)
    kinds = {n: "conv" if isinstance(m, nn.Conv2d) else "fc" for n, m in layers.items()}
    unknown = set(table) - set(layers) - {"conv", "fc", "*"}
    if unknown:
        raise ValueError(f"{what}: unknown layer(s) {sorted(unknown)}; layers: "
                         f"{', '.join(layers)} (or conv, fc, *)")
    out = {}
    for n in layers:
        for key in (n, kinds[n], "*"):
            if key in table:
                out[n] = table[key]
                break
    return out


def _ints(values: Mapping[str, str], what: str, lo: int, hi: int) -> dict[str, int]:
    out = {}
    for n, v in values.items():
        try:
            out[n] = int(v)
        except ValueError:
            out[n] = -1
        if not lo <= out[n] <= hi:
            raise ValueError(f"{what}: layer {n}: expected an integer in {lo}..{hi}, got {v!r}")
    return out


def _log(opts: Options, msg: str) -> None:
    if opts.progress:
        tqdm.write(msg, file=sys.stderr)


def _state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def encode_stage(state: Mapping[str, np.ndarray], layer_names: list[str],
                 codebooks: Mapping[str, np.ndarray], index_bits: Mapping[str, int],
                 huffman: bool, codebook_dtype: str = "f4", bias_dtype: str = "f4"
                 ) -> dict[str, codec.Tensor]:
    """Model-file tensors for one stage: pruned layers' weights as "dc", their biases raw
    float32 or float16, everything else raw as it is."""
    tensors: dict[str, codec.Tensor] = {}
    for key, arr in state.items():
        layer = key[:-len(".weight")] if key.endswith(".weight") else None
        if layer in layer_names:
            book = codebooks.get(layer)
            tensors[key] = codec.model.dc(
                arr, codebook=book, index_bits=int(index_bits[layer]), huffman_index=huffman,
                huffman_values=huffman and book is not None,
                value_dtype=codebook_dtype if book is not None else "f4")
        elif bias_dtype == "f2" and key.endswith(".bias") and key[:-5] in layer_names:
            tensors[key] = codec.model.raw(arr.astype(np.float16))
        else:
            tensors[key] = codec.model.raw(arr)
    return tensors


def layer_rows(tensors: Mapping[str, codec.Tensor], state: Mapping[str, np.ndarray],
               layer_names: list[str], bits: Mapping[str, int], index_bits: Mapping[str, int]
               ) -> list[dict[str, Any]]:
    rows = []
    for layer in layer_names:
        t = tensors[f"{layer}.weight"]
        s = t.stats
        b = tensors.get(f"{layer}.bias")
        bias_bytes = b.stats["bytes"] if b is not None else 0
        n_bias = state[f"{layer}.bias"].size if b is not None else 0
        nnz = max(1, s["nnz"])
        rows.append({
            "layer": layer, "weights": s["size"], "kept": s["nnz"],
            "kept_frac": s["nnz"] / max(1, s["size"]), "store": s["store"],
            "weight_bits": int(bits.get(layer, 32)) or 32,
            "index_bits": int(index_bits[layer]) if s["store"] == "sparse" else 0,
            "value_bits_eff": 8 * (s["value_bytes"] + s["codebook_bytes"]) / nnz,
            "index_bits_eff": 8 * s["index_bytes"] / nnz,
            "bytes": s["bytes"] + bias_bytes,
            "fp32_bytes": 4 * (s["size"] + n_bias),
        })
        rows[-1]["ratio"] = rows[-1]["fp32_bytes"] / max(1, rows[-1]["bytes"])
    return rows


def format_report(r: Mapping[str, Any]) -> str:
    head = (f"{'layer':<8}{'weights':>9}{'kept':>7}  {'weight bits':>13}  {'index bits':>12}"
            f"  {'store':<7}{'bytes':>9}{'ratio':>8}")
    lines = [f"Deep Compression of {r['model']} ({r['checkpoint']})", head, "-" * len(head)]
    for row in r["layers"]:
        wb = f"{row['weight_bits']} ({row['value_bits_eff']:.2f})"
        ib = f"{row['index_bits']} ({row['index_bits_eff']:.2f})" if row["index_bits"] else "-"
        lines.append(f"{row['layer']:<8}{row['weights']:>9,}{row['kept_frac']:>7.1%}  {wb:>13}  "
                     f"{ib:>12}  {row['store']:<7}{row['bytes']:>9,}{row['ratio']:>7.1f}x")
    tot_w = sum(x["weights"] for x in r["layers"])
    tot_k = sum(x["kept"] for x in r["layers"])
    lines.append(f"{'header+pad':<8}{'':>9}{'':>7}  {'':>13}  {'':>12}  {'':<7}"
                 f"{r['file_bytes'] - sum(x['bytes'] for x in r['layers']):>9,}")
    lines.append(f"{'total':<8}{tot_w:>9,}{tot_k / max(1, tot_w):>7.1%}  {'':>13}  {'':>12}  "
                 f"{'file':<7}{r['file_bytes']:>9,}{r['fp32_bytes'] / r['file_bytes']:>7.1f}x")
    lines.append("(weight / index bits: configured (effective bits per kept weight in the file, "
                 "codebook and code tables included))")
    lines.append("")
    lines.append(f"{'stage':<16}{'file bytes':>12}{'ratio':>9}{'test acc':>10}")
    st = r["stages"]
    for label, key, acc in (("float (fp32)", None, r["acc_float"]),
                            ("P", "p", r["acc_pruned"]), ("P+Q", "pq", r["acc_compressed"]),
                            ("P+Q+H", "pqh", r["acc_compressed"])):
        nbytes = r["fp32_bytes"] if key is None else st[key]["file_bytes"]
        lines.append(f"{label:<16}{nbytes:>12,}{r['fp32_bytes'] / nbytes:>8.1f}x{acc:>10.2%}")
    lines.append(f"written: {r['out']} ({r['file_bytes']:,} bytes, "
                 f"{'P+Q+H' if r['options']['huffman'] else 'P+Q'}); wall time "
                 f"{r['wall_seconds']:.0f} s")
    return "\n".join(lines)


def run(checkpoint: str, out: str, opts: Options, json_path: str | None = None) -> dict:
    """Run the pipeline, write ``out`` (and ``json_path``), return the report dict."""
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    model, meta = load_model(checkpoint, device="cpu")
    name, norm = meta["model"]["name"], model.normalization
    if norm is None:
        raise ValueError(f"{checkpoint}: field 'normalization': missing")
    cfg = meta.get("config") or {}
    images, labels = load("train", opts.data)
    test_x, test_y = load("test", opts.data)
    train, _ = train_val_split(images, labels, val_size=int(cfg.get("val_size", 0) or 0),
                               seed=int(cfg.get("seed", 0) or 0))
    if opts.max_train:
        train = subset(*train, min(opts.max_train, len(train[1])), seed=opts.seed)
    if opts.max_test:
        test_x, test_y = subset(test_x, test_y, min(opts.max_test, len(test_y)), seed=opts.seed)
    acc = lambda m: evaluate(m, test_x, test_y, normalization=norm)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    layers = prune.layers(model)
    names = list(layers)
    preset = PRESETS.get(name, GENERIC)
    opts = replace(opts, **{k: v for k, v in preset.items() if getattr(opts, k) is None})
    for key in ("codebook_dtype", "bias_dtype"):
        if getattr(opts, key) not in ("f4", "f2"):
            raise ValueError(f"{key}: expected 'f4' or 'f2', got {getattr(opts, key)!r}")
    targets = resolve(opts.prune, layers, "--prune")
    for n, t in targets.items():
        try:
            prune.parse_target(t)
        except ValueError:
            raise ValueError(f"--prune: layer {n}: expected a sparsity in [0, 1] or '<q>std', "
                             f"got {t!r}") from None
    bits = _ints(resolve(opts.bits, layers, "--bits"), "--bits", 0, 16)
    ibits = _ints(resolve(opts.index_bits, layers, "--index-bits"), "--index-bits", 1, 16)
    missing = [n for n in names if n not in ibits]
    if missing:
        raise ValueError(f"--index-bits: no value for layer(s) {missing}")
    acc_float = acc(model)
    _log(opts, f"{name}: float test accuracy {acc_float:.2%}; {fp32_bytes:,} fp32 bytes")
    graph = build_graph(model, norm.to_dict(), (1, 28, 28))[0]
    file_meta = {"model": meta["model"], "pipeline": "deep-compression",
                 "acc_float": round(acc_float, 6)}

    report_sens = None
    if opts.sensitivity:
        t0 = time.perf_counter()
        sx, sy = subset(test_x, test_y, min(2000, len(test_y)), seed=opts.seed)
        table = prune.sensitivity(model, lambda m: evaluate(m, sx, sy, normalization=norm))
        d = Path(opts.sensitivity)
        d.mkdir(parents=True, exist_ok=True)
        prune.plot_sensitivity(table, str(d / f"{name}-sensitivity.png"),
                               f"{name}: pruning one layer, no retraining ({len(sy)} test images)")
        (d / f"{name}-sensitivity.json").write_text(json.dumps(table, indent=1) + "\n")
        _log(opts, "sensitivity (test accuracy when one layer is pruned, no retraining):\n"
             + prune.format_sensitivity(table))
        report_sens = {"png": str(d / f"{name}-sensitivity.png"), "table": table}
        times["sensitivity"] = time.perf_counter() - t0

    def retrain(epochs: int, lr: float, seed: int) -> None:
        fit(model, train, None, epochs=epochs, lr=lr, batch_size=opts.batch_size,
            optimizer="adam", schedule="cosine", weight_decay=0.0, seed=seed, device="cpu",
            normalization=norm, progress=opts.progress)

    # ---- P: pruning with retraining
    t0 = time.perf_counter()
    prune_targets = {n: t for n, t in targets.items()
                     if prune.parse_target(t) != {"sparsity": 0.0}}
    if opts.schedule == "gradual":
        steps = opts.prune_epochs * -(-len(train[1]) // opts.batch_size)
        _log(opts, f"gradual pruning over {opts.prune_epochs} epochs to {prune_targets}")
        hist = [prune.gradual_prune(
            model, prune_targets, lambda: retrain(opts.prune_epochs, opts.lr_prune, opts.seed + 1),
            end=max(1, int(opts.gradual_end * steps)), every=50)]
    elif opts.schedule == "iterative":
        hist = prune.iterative_prune(
            model, prune_targets,
            lambda i: retrain(opts.prune_epochs, opts.lr_prune, opts.seed + 1 + i),
            steps=opts.prune_steps, progress=lambda m: _log(opts, m))
    else:
        raise ValueError(f"schedule: expected 'gradual' or 'iterative', got {opts.schedule!r}")
    acc_pruned = acc(model)
    times["prune"] = time.perf_counter() - t0
    _log(opts, f"pruned: test accuracy {acc_pruned:.2%}")
    pruned = _state(model)
    t_p = encode_stage(pruned, names, {}, ibits, huffman=False)
    size_p = len(codec.model.encode(graph, t_p, file_meta))

    # ---- Q: weight sharing + centroid fine-tuning
    t0 = time.perf_counter()
    shared = {n: b for n, b in bits.items() if b > 0}
    info = share.share(model, shared, init=opts.init, seed=opts.seed)
    acc_kmeans = acc(model)
    _log(opts, f"k-means ({opts.init} init): test accuracy {acc_kmeans:.2%} before fine-tuning")
    if opts.share_epochs > 0:
        retrain(opts.share_epochs, opts.lr_share, opts.seed + 100)
    if opts.codebook_dtype == "f2":
        share.round_centroids(model, torch.float16)
    if opts.bias_dtype == "f2":
        with torch.no_grad():
            for n, m in layers.items():
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(m.bias.half().float())
    books = {n: layers[n].weight_centroids.detach().cpu().numpy().copy() for n in shared}
    for m in layers.values():
        share.detach_shared(m)
    final = _state(model)
    acc_torch = acc(model)
    times["share"] = time.perf_counter() - t0

    # ---- encode, write, verify from the file
    t0 = time.perf_counter()
    stages = {"p": {"file_bytes": size_p, "acc": acc_pruned}}
    tensors = {}
    for key, huff in (("pq", False), ("pqh", True)):
        tensors[key] = encode_stage(final, names, books, ibits, huff, opts.codebook_dtype,
                                    opts.bias_dtype)
        stages[key] = {"file_bytes": len(codec.model.encode(graph, tensors[key], file_meta))}
    chosen = "pqh" if opts.huffman else "pq"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    written = codec.save(out, graph, tensors[chosen], file_meta)
    mf = codec.load(out)
    for key, arr in final.items():
        got = mf.tensor(key)
        if not np.array_equal(np.asarray(got, dtype=arr.dtype), arr):
            raise AssertionError(f"{out}: tensor {key!r} does not decode to the fine-tuned "
                                 f"shared weights")
    from lowbit.runtime import Runtime
    pred = Runtime(out).predict(test_x)            # the file as users run it
    acc_file = float((pred == test_y).mean())
    times["encode_eval"] = time.perf_counter() - t0
    wall = time.perf_counter() - t_start

    report = {
        "model": name, "checkpoint": str(checkpoint), "out": str(out),
        "fp32_bytes": fp32_bytes, "file_bytes": written,
        "ratio_pruned": fp32_bytes / stages["p"]["file_bytes"],
        "ratio_pq": fp32_bytes / stages["pq"]["file_bytes"],
        "ratio_pqh": fp32_bytes / stages["pqh"]["file_bytes"],
        "acc_float": acc_float, "acc_pruned": acc_pruned, "acc_kmeans": acc_kmeans,
        "acc_compressed": acc_file, "acc_compressed_torch": acc_torch,
        "test_images": int(len(test_y)), "train_images": int(len(train[1])),
        "stages": stages, "layers": layer_rows(tensors[chosen], final, names, bits, ibits),
        "prune_schedule": hist, "kmeans": info, "targets": targets, "bits": bits,
        "index_bits": ibits, "options": asdict(opts), "seconds": times, "wall_seconds": wall,
        "threads": torch.get_num_threads(), "command": "lowbit " + " ".join(sys.argv[1:]),
        "sensitivity": report_sens,
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report


def main(checkpoint: str, out: str, json_path: str | None = None, **options: Any) -> int:
    """CLI entry: run, print the per-layer table; user errors -> one line, exit code 2."""
    from lowbit.data import DataError
    from .checkpoint import CheckpointError
    try:
        report = run(checkpoint, out, Options(**options), json_path)
    except (DataError, CheckpointError, ValueError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lowbit compress: error: {msg}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0
