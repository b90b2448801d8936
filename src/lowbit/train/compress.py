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
bytes.  Layer specs (``--prune``, ``--share-bits``, ``--index-bits``) are ``VALUE`` or
``key=VALUE,...`` with key a layer name, ``conv``, ``fc`` or ``*`` (name beats kind beats *).

Any float checkpoint works (a registered model or your own ``package.module:function``, any
input shape, any data ``lowbit.data.load`` reads): models without a tuned preset get
:func:`generic_preset`.  The written file's accuracy is measured by a callback
(``file_accuracy``), since ``lowbit.train`` does not import the runtime: ``lowbit compress``
passes ``lowbit.runtime.evaluate.file_accuracy``.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lowbit import codec
from lowbit.data import subset, train_val_split

from . import prune, share
from .dcfile import encode_stage, format_report, layer_rows
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
    bits: str | None = None            # weight-sharing bits per layer (0 = no sharing);
                                       # --share-bits on the command line
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
    low_rank: str | None = None        # low-rank first (lowbit.train.lowrank spec), then P/Q/H
    low_rank_epochs: int = 2           # fine-tuning epochs after the decomposition


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


def generic_preset(names: list[str]) -> dict[str, Any]:
    """The preset of a model without a tuned one: ``GENERIC``, with the first prunable layer
    (often a tiny stem whose few weights matter most) kept dense and the last one (the
    classifier) pruned to 50%, as the tuned LeNet presets do."""
    preset = dict(GENERIC)
    if len(names) > 1:
        preset["prune"] = f"{GENERIC['prune']},{names[0]}=0,{names[-1]}=0.5"
    return preset


def _check_float(model: nn.Module, checkpoint: str) -> None:
    from .layers import QuantMixin
    quant = [n for n, m in model.named_modules() if isinstance(m, QuantMixin)
             and (m.weight_quantizer is not None or m.input_quantizer is not None)]
    if quant:
        raise ValueError(f"{checkpoint}: Deep Compression takes a float model; this one has "
                         f"quantized layers ({', '.join(quant[:4])}{', ...' if len(quant) > 4 else ''}); "
                         f"export it instead (lowbit export)")


def _data_root(opts: Options, cfg: dict) -> str | None:
    """``--data``, else the data the checkpoint was trained on (recorded by lowbit train)."""
    if opts.data not in (None, ""):
        return None if opts.data == "fashion-mnist" else opts.data
    recorded = cfg.get("data")
    return recorded if recorded and recorded != "fashion-mnist" else None


@dataclass
class _Job:
    """What every stage needs: the model, its data, the resolved options and layer specs."""
    model: nn.Module
    meta: dict
    opts: Options
    train: tuple
    test: tuple
    layers: dict
    targets: dict
    bits: dict
    ibits: dict
    low_rank: dict | None = None       # per-layer plans of lowrank.decompose
    fp32_bytes: int | None = None      # of the model as loaded (before any decomposition)
    acc_float: float | None = None     # of the model as loaded, when it was decomposed

    def acc(self, model: nn.Module | None = None) -> float:
        return evaluate(model or self.model, *self.test, normalization=self.model.normalization)

    def retrain(self, epochs: int, lr: float, seed: int) -> None:
        fit(self.model, self.train, None, epochs=epochs, lr=lr, batch_size=self.opts.batch_size,
            optimizer="adam", schedule="cosine", weight_decay=0.0, seed=seed, device="cpu",
            normalization=self.model.normalization, progress=self.opts.progress)


def _prepare(checkpoint: str, opts: Options) -> _Job:
    from .commands import load_shaped
    model, meta = load_model(checkpoint, device="cpu")
    if model.normalization is None:
        raise ValueError(f"{checkpoint}: field 'normalization': missing")
    _check_float(model, checkpoint)
    cfg = meta.get("config") or {}
    root = _data_root(opts, cfg)
    images, labels = load_shaped("train", root, meta["input_shape"])
    test_x, test_y = load_shaped("test", root, meta["input_shape"])
    train, _ = train_val_split(images, labels, val_size=int(cfg.get("val_size", 0) or 0),
                               seed=int(cfg.get("seed", 0) or 0))
    if opts.max_train:
        train = subset(*train, min(opts.max_train, len(train[1])), seed=opts.seed)
    if opts.max_test:
        test_x, test_y = subset(test_x, test_y, min(opts.max_test, len(test_y)), seed=opts.seed)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    plans = acc0 = None
    if opts.low_rank:              # low-rank first: the layer specs then name the factors
        from . import lowrank
        acc0 = evaluate(model, test_x, test_y, normalization=model.normalization)
        plans = lowrank.decompose(model, opts.low_rank)
    layers = prune.layers(model)
    names = list(layers)
    preset = PRESETS.get(meta["model"]["name"]) or generic_preset(names)
    opts = replace(opts, data=root,
                   **{k: v for k, v in preset.items() if getattr(opts, k) is None})
    if plans is not None:
        opts = replace(opts, **{k: lowrank.expand_layer_spec(getattr(opts, k), plans)
                                for k in ("prune", "bits", "index_bits")})
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
    bits = _ints(resolve(opts.bits, layers, "--share-bits"), "--share-bits", 0, 16)
    ibits = _ints(resolve(opts.index_bits, layers, "--index-bits"), "--index-bits", 1, 16)
    missing = [n for n in names if n not in ibits]
    if missing:
        raise ValueError(f"--index-bits: no value for layer(s) {missing}")
    return _Job(model, meta, opts, train, (test_x, test_y), layers, targets, bits, ibits,
                plans, fp32_bytes, acc0)


def _sensitivity(job: _Job, name: str) -> dict:
    opts, (test_x, test_y) = job.opts, job.test
    sx, sy = subset(test_x, test_y, min(2000, len(test_y)), seed=opts.seed)
    norm = job.model.normalization
    table = prune.sensitivity(job.model, lambda m: evaluate(m, sx, sy, normalization=norm))
    d = Path(opts.sensitivity)
    d.mkdir(parents=True, exist_ok=True)
    png = str(d / f"{name}-sensitivity.png")
    prune.plot_sensitivity(table, png, f"{name}: pruning one layer, no retraining "
                                       f"({len(sy)} test images)")
    (d / f"{name}-sensitivity.json").write_text(json.dumps(table, indent=1) + "\n")
    _log(opts, "sensitivity (test accuracy when one layer is pruned, no retraining):\n"
         + prune.format_sensitivity(table))
    return {"png": png, "table": table}


def _prune_stage(job: _Job) -> list:
    """P: magnitude pruning with retraining (gradual or iterative); returns the schedule."""
    opts = job.opts
    prune_targets = {n: t for n, t in job.targets.items()
                     if prune.parse_target(t) != {"sparsity": 0.0}}
    if opts.schedule == "gradual":
        steps = opts.prune_epochs * -(-len(job.train[1]) // opts.batch_size)
        _log(opts, f"gradual pruning over {opts.prune_epochs} epochs to {prune_targets}")
        return [prune.gradual_prune(
            job.model, prune_targets,
            lambda: job.retrain(opts.prune_epochs, opts.lr_prune, opts.seed + 1),
            end=max(1, int(opts.gradual_end * steps)), every=50)]
    if opts.schedule == "iterative":
        return prune.iterative_prune(
            job.model, prune_targets,
            lambda i: job.retrain(opts.prune_epochs, opts.lr_prune, opts.seed + 1 + i),
            steps=opts.prune_steps, progress=lambda m: _log(opts, m))
    raise ValueError(f"schedule: expected 'gradual' or 'iterative', got {opts.schedule!r}")


def _share_stage(job: _Job) -> tuple[dict, dict, float]:
    """Q: k-means weight sharing + centroid fine-tuning; returns (codebooks, k-means info,
    accuracy right after k-means)."""
    opts, model = job.opts, job.model
    shared = {n: b for n, b in job.bits.items() if b > 0}
    info = share.share(model, shared, init=opts.init, seed=opts.seed)
    acc_kmeans = job.acc()
    _log(opts, f"k-means ({opts.init} init): test accuracy {acc_kmeans:.2%} before fine-tuning")
    if opts.share_epochs > 0:
        job.retrain(opts.share_epochs, opts.lr_share, opts.seed + 100)
    if opts.codebook_dtype == "f2":
        share.round_centroids(model, torch.float16)
    if opts.bias_dtype == "f2":
        with torch.no_grad():
            for m in job.layers.values():
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(m.bias.half().float())
    books = {n: job.layers[n].weight_centroids.detach().cpu().numpy().copy() for n in shared}
    for m in job.layers.values():
        share.detach_shared(m)
    return books, info, acc_kmeans


def _write(job: _Job, out: str, graph: dict, file_meta: dict, final: dict, books: dict,
           stages: dict) -> tuple[int, dict]:
    """Encode P+Q and P+Q+H, write the chosen one, check it decodes to ``final`` exactly."""
    opts, names = job.opts, list(job.layers)
    tensors = {}
    for key, huff in (("pq", False), ("pqh", True)):
        tensors[key] = encode_stage(final, names, books, job.ibits, huff, opts.codebook_dtype,
                                    opts.bias_dtype)
        stages[key] = {"file_bytes": len(codec.model.encode(graph, tensors[key], file_meta))}
    chosen = tensors["pqh" if opts.huffman else "pq"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    written = codec.save(out, graph, chosen, file_meta)
    mf = codec.load(out)
    for key, arr in final.items():
        got = np.asarray(mf.tensor(key), dtype=arr.dtype)
        if got.size != arr.size or not np.array_equal(got.reshape(arr.shape), arr):
            raise AssertionError(f"{out}: tensor {key!r} does not decode to the fine-tuned "
                                 f"shared weights")
    return written, chosen


def run(checkpoint: str, out: str, opts: Options, json_path: str | None = None,
        file_accuracy: Callable[[str, Any, Any], float] | None = None) -> dict:
    """Run the pipeline, write ``out`` (and ``json_path``), return the report dict.

    ``file_accuracy(path, images, labels)``: the accuracy of the written file as users run it
    (``lowbit.runtime.evaluate.file_accuracy``; lowbit.train does not import the runtime).
    Without it, ``acc_compressed`` is the torch model's (``acc_compressed_from``: "torch")."""
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    from lowbit.cliargs import check_output_file
    check_output_file(out, overwrite=True, source=checkpoint)
    job = _prepare(checkpoint, opts)
    opts, model, name = job.opts, job.model, job.meta["model"]["name"]
    names = list(job.layers)
    fp32_bytes = job.fp32_bytes or 4 * sum(p.numel() for p in model.parameters())
    acc_float = job.acc() if job.acc_float is None else job.acc_float
    _log(opts, f"{name}: float test accuracy {acc_float:.2%}; {fp32_bytes:,} fp32 bytes")
    low_rank = None
    if job.low_rank is not None:          # fine-tune the factors before pruning them
        t0 = time.perf_counter()
        acc_dec = job.acc()
        if opts.low_rank_epochs > 0:
            job.retrain(opts.low_rank_epochs, opts.lr_prune, opts.seed + 50)
        low_rank = {"spec": opts.low_rank, "layers": job.low_rank, "acc_decomposed": acc_dec,
                    "acc_tuned": job.acc(), "epochs": opts.low_rank_epochs,
                    "params": sum(p.numel() for p in model.parameters())}
        times["low_rank"] = time.perf_counter() - t0
        _log(opts, f"low-rank {opts.low_rank}: {low_rank['params']:,} parameters, test accuracy "
                   f"{acc_dec:.2%} decomposed, {low_rank['acc_tuned']:.2%} fine-tuned")
    graph = build_graph(model, model.normalization.to_dict(), job.meta["input_shape"])[0]
    file_meta = {"model": job.meta["model"], "pipeline": "deep-compression",
                 "acc_float": round(acc_float, 6)}
    if opts.low_rank:
        file_meta["low_rank"] = opts.low_rank
    report_sens = None
    if opts.sensitivity:
        t0 = time.perf_counter()
        report_sens = _sensitivity(job, name.replace(":", "."))
        times["sensitivity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    hist = _prune_stage(job)
    acc_pruned = job.acc()
    times["prune"] = time.perf_counter() - t0
    _log(opts, f"pruned: test accuracy {acc_pruned:.2%}")
    t_p = encode_stage(_state(model), names, {}, job.ibits, huffman=False)
    stages = {"p": {"file_bytes": len(codec.model.encode(graph, t_p, file_meta)),
                    "acc": acc_pruned}}

    t0 = time.perf_counter()
    books, info, acc_kmeans = _share_stage(job)
    final = _state(model)
    acc_torch = job.acc()
    times["share"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    written, chosen = _write(job, out, graph, file_meta, final, books, stages)
    acc_file = file_accuracy(out, *job.test) if file_accuracy is not None else acc_torch
    times["encode_eval"] = time.perf_counter() - t0
    report = {
        "model": name, "checkpoint": str(checkpoint), "out": str(out),
        "fp32_bytes": fp32_bytes, "file_bytes": written,
        "ratio_pruned": fp32_bytes / stages["p"]["file_bytes"],
        "ratio_pq": fp32_bytes / stages["pq"]["file_bytes"],
        "ratio_pqh": fp32_bytes / stages["pqh"]["file_bytes"],
        "acc_float": acc_float, "acc_pruned": acc_pruned, "acc_kmeans": acc_kmeans,
        "acc_compressed": acc_file, "acc_compressed_torch": acc_torch,
        "acc_compressed_from": "file" if file_accuracy is not None else "torch",
        "test_images": int(len(job.test[1])), "train_images": int(len(job.train[1])),
        "input_shape": list(job.meta["input_shape"]), "stages": stages,
        "layers": layer_rows(chosen, final, names, job.bits, job.ibits),
        "prune_schedule": hist, "kmeans": info, "targets": job.targets, "bits": job.bits,
        "index_bits": job.ibits, "options": asdict(opts), "seconds": times,
        "wall_seconds": time.perf_counter() - t_start,
        "threads": torch.get_num_threads(), "command": "lowbit " + " ".join(sys.argv[1:]),
        "sensitivity": report_sens, "low_rank": low_rank,
    }
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report


def main(checkpoint: str, out: str, json_path: str | None = None,
         file_accuracy: Callable[[str, Any, Any], float] | None = None, **options: Any) -> int:
    """CLI entry: run, print the per-layer table; user errors -> one line, exit code 2."""
    from lowbit.data import DataError
    from .checkpoint import CheckpointError
    try:
        report = run(checkpoint, out, Options(**options), json_path, file_accuracy)
    except (DataError, CheckpointError, ValueError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lowbit compress: error: {msg}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0
