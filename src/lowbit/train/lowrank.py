"""Low-rank approximation of a float model's layers, then fine-tuning (``lowbit lowrank``,
``lowbit compress --low-rank``).

Dense layers: truncated SVD.  ``W (out x in) ~ U_r S_r V_r^T``; the layer becomes two Linear
layers ``v`` (in -> r, weight ``sqrt(S_r) V_r^T``, no bias) and ``u`` (r -> out, weight
``U_r sqrt(S_r)``, the original bias), ``r (in + out)`` weights instead of ``in * out``.

Conv layers, two decompositions (``conv=``):

- ``tucker`` (Tucker-2 by HOSVD; Kim et al. 2016): ``W (O, C, kh, kw) ~ G x_0 U_out x_1 U_in``
  with ``U_out`` (O x r_out) / ``U_in`` (C x r_in) the leading left singular vectors of the
  mode-0 / mode-1 unfoldings and the core ``G = W x_0 U_out^T x_1 U_in^T``: a 1x1 conv C ->
  r_in (``first``), the kh x kw core conv r_in -> r_out with the original stride and padding
  (``core``), a 1x1 conv r_out -> O with the bias (``last``);
- ``spatial`` (Jaderberg et al. 2014, scheme 2, the data-free SVD form of Tai et al. 2016):
  ``W[o, c, i, j] ~ sum_r V[r, c, i] H[o, r, j]`` from the SVD of W reshaped to
  (C kh) x (O kw): a kh x 1 conv C -> r (stride (sh, 1), padding (ph, 0)) then a 1 x kw conv
  r -> O (stride (1, sw), padding (0, pw), the bias).  Exact at full rank with zero padding.

Every factor is a plain ``nn.Linear`` / ``nn.Conv2d`` inside an ``nn.Sequential`` that takes
the layer's place (same attribute name), so the fx exporter writes ordinary ``dense`` /
``conv2d`` ops and the runtime runs them; Deep Compression's pruning / weight sharing then
see the factors as layers (``fc1.v``, ``fc1.u``, ...).

Rank choice (:class:`Spec`, text ``energy=0.9`` | ``ratio=4`` | ``rank=16`` plus optional
``,conv=tucker|spatial`` and ``,layers=fc1+conv2``):

- ``energy=e``: the smallest rank whose squared singular values keep a fraction >= e of the
  total (Tucker: per mode);
- ``ratio=k``: the largest rank whose factors hold at most 1/k of the layer's weights
  (Tucker: r_in / r_out proportional to C / O);
- ``rank=n``: that rank (capped by the layer's dimensions).

By default every conv / dense layer with at least ``min_weights`` (1000) weights is a
candidate except the model's last layer (the classifier, which is small and sensitive) and
convs with one input channel (nothing to factor); a candidate whose factors would not be
smaller than the layer stays as it is.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = ["Spec", "parse_spec", "energy_rank", "ratio_rank_linear", "svd_linear",
           "tucker2_conv", "spatial_conv", "decompose", "factor_names", "expand_layer_spec",
           "run", "main"]

MODES = ("energy", "ratio", "rank")
CONV_KINDS = ("tucker", "spatial")


@dataclass
class Spec:
    mode: str = "energy"               # energy | ratio | rank
    value: float = 0.9
    conv: str = "tucker"               # tucker | spatial
    layers: list[str] | None = None    # None: the default candidates
    min_weights: int = 1000

    def __str__(self) -> str:
        v = int(self.value) if self.mode == "rank" else self.value
        s = f"{self.mode}={v:g},conv={self.conv}"
        return s + (f",layers={'+'.join(self.layers)}" if self.layers else "")


def parse_spec(text: str | Spec) -> Spec:
    """``"energy=0.9"`` / ``"ratio=4,conv=spatial"`` / ``"rank=16,layers=fc1+conv2"`` -> Spec."""
    if isinstance(text, Spec):
        return text
    spec, mode_seen = Spec(), False
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise ValueError(f"--low-rank: expected KEY=VALUE items (energy=0.9, ratio=4, rank=16, "
                             f"conv=tucker|spatial, layers=fc1+conv2), got {item!r}")
        if key in MODES:
            if mode_seen:
                raise ValueError("--low-rank: give one of energy=, ratio=, rank=")
            mode_seen = True
            try:
                v = float(value)
            except ValueError:
                v = float("nan")
            ok = {"energy": 0 < v <= 1, "ratio": v > 1, "rank": v >= 1 and v == int(v)}[key]
            if not ok:
                want = {"energy": "a fraction in (0, 1]", "ratio": "a number > 1",
                        "rank": "a positive integer"}[key]
                raise ValueError(f"--low-rank: {key}: expected {want}, got {value!r}")
            spec.mode, spec.value = key, v
        elif key == "conv":
            if value not in CONV_KINDS:
                raise ValueError(f"--low-rank: conv: expected tucker or spatial, got {value!r}")
            spec.conv = value
        elif key == "layers":
            spec.layers = [n for n in value.replace(";", "+").split("+") if n]
        elif key == "min_weights":
            spec.min_weights = int(value)
        else:
            raise ValueError(f"--low-rank: unknown key {key!r} (energy, ratio, rank, conv, "
                             f"layers, min_weights)")
    if not mode_seen:
        raise ValueError("--low-rank: give one of energy=E, ratio=K, rank=N")
    return spec


# -- rank choice --------------------------------------------------------------------------

def energy_rank(s: np.ndarray, energy: float) -> int:
    """Smallest r with sum(s[:r]^2) >= energy * sum(s^2) (s sorted descending)."""
    e = np.cumsum(np.asarray(s, np.float64) ** 2)
    if e[-1] <= 0:
        return 1
    return int(min(len(e), np.searchsorted(e / e[-1], energy - 1e-12) + 1))


def ratio_rank_linear(n_out: int, n_in: int, ratio: float) -> int:
    """Largest r with r (n_in + n_out) <= n_in n_out / ratio (at least 1)."""
    return max(1, int(math.floor(n_in * n_out / (ratio * (n_in + n_out)))))


def _svd(m: torch.Tensor):
    u, s, vh = torch.linalg.svd(m.detach().double(), full_matrices=False)
    return u, s, vh


# -- factorisations -----------------------------------------------------------------------

def svd_linear(lin: nn.Linear, rank: int) -> nn.Sequential:
    """``lin`` as Linear(in, r, no bias) -> Linear(r, out, bias): W ~ U_r S_r V_r^T."""
    u, s, vh = _svd(lin.weight)
    r = int(min(rank, s.numel()))
    root = s[:r].sqrt()
    v = nn.Linear(lin.in_features, r, bias=False)
    w = nn.Linear(r, lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        v.weight.copy_((root[:, None] * vh[:r]).float())
        w.weight.copy_((u[:, :r] * root[None, :]).float())
        if lin.bias is not None:
            w.bias.copy_(lin.bias)
    return nn.Sequential(OrderedDict([("v", v), ("u", w)]))


def _conv_args(conv: nn.Conv2d) -> None:
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or isinstance(conv.padding, str) \
            or conv.padding_mode != "zeros":
        raise ValueError("low-rank: convs with groups, dilation or non-zero padding modes are "
                         "not supported")


def tucker2_conv(conv: nn.Conv2d, r_in: int, r_out: int) -> nn.Sequential:
    """Tucker-2 (HOSVD) of ``conv``: 1x1 C->r_in, kh x kw r_in->r_out, 1x1 r_out->O."""
    _conv_args(conv)
    w = conv.weight.detach().double()                      # (O, C, kh, kw)
    o, c, kh, kw = w.shape
    r_in, r_out = int(min(r_in, c)), int(min(r_out, o))
    u_out = _svd(w.reshape(o, -1))[0][:, :r_out]                        # O x r_out
    u_in = _svd(w.transpose(0, 1).reshape(c, -1))[0][:, :r_in]          # C x r_in
    core = torch.einsum("ocij,oa,cb->abij", w, u_out, u_in)            # r_out x r_in x kh x kw
    first = nn.Conv2d(c, r_in, 1, bias=False)
    mid = nn.Conv2d(r_in, r_out, (kh, kw), conv.stride, conv.padding, bias=False)
    last = nn.Conv2d(r_out, o, 1, bias=conv.bias is not None)
    with torch.no_grad():
        first.weight.copy_(u_in.t().reshape(r_in, c, 1, 1).float())
        mid.weight.copy_(core.float())
        last.weight.copy_(u_out.reshape(o, r_out, 1, 1).float())
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
    return nn.Sequential(OrderedDict([("first", first), ("core", mid), ("last", last)]))


def _spatial_matrix(w: torch.Tensor) -> torch.Tensor:
    o, c, kh, kw = w.shape
    return w.permute(1, 2, 0, 3).reshape(c * kh, o * kw)              # [(c, i), (o, j)]


def spatial_conv(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """Jaderberg scheme 2 (SVD): kh x 1 conv C->r, then 1 x kw conv r->O."""
    _conv_args(conv)
    w = conv.weight.detach().double()
    o, c, kh, kw = w.shape
    u, s, vh = _svd(_spatial_matrix(w))
    r = int(min(rank, s.numel()))
    root = s[:r].sqrt()
    a = u[:, :r] * root[None, :]                     # (C kh) x r
    b = root[:, None] * vh[:r]                       # r x (O kw)
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    vert = nn.Conv2d(c, r, (kh, 1), (sh, 1), (ph, 0), bias=False)
    hor = nn.Conv2d(r, o, (1, kw), (1, sw), (0, pw), bias=conv.bias is not None)
    with torch.no_grad():
        vert.weight.copy_(a.reshape(c, kh, r).permute(2, 0, 1).reshape(r, c, kh, 1).float())
        hor.weight.copy_(b.reshape(r, o, kw).permute(1, 0, 2).reshape(o, r, 1, kw).float())
        if conv.bias is not None:
            hor.bias.copy_(conv.bias)
    return nn.Sequential(OrderedDict([("vertical", vert), ("horizontal", hor)]))


# -- choosing ranks per layer -------------------------------------------------------------

def _linear_plan(lin: nn.Linear, spec: Spec) -> dict:
    o, i = lin.weight.shape
    if spec.mode == "rank":
        r = int(spec.value)
    elif spec.mode == "ratio":
        r = ratio_rank_linear(o, i, spec.value)
    else:
        r = energy_rank(_svd(lin.weight)[1].numpy(), spec.value)
    r = min(r, o, i)
    return {"kind": "svd", "rank": r, "weights": o * i, "factor_weights": r * (o + i)}


def _tucker_params(c, o, k, ri, ro) -> int:
    return c * ri + ri * ro * k + ro * o


def _conv_plan(conv: nn.Conv2d, spec: Spec) -> dict:
    o, c, kh, kw = conv.weight.shape
    full = o * c * kh * kw
    w = conv.weight.detach().double()
    if spec.conv == "spatial":
        if spec.mode == "rank":
            r = int(spec.value)
        elif spec.mode == "ratio":
            r = max(1, int(full / spec.value // (c * kh + o * kw)))
        else:
            r = energy_rank(_svd(_spatial_matrix(w))[1].numpy(), spec.value)
        r = min(r, c * kh, o * kw)
        return {"kind": "spatial", "rank": r, "weights": full,
                "factor_weights": r * (c * kh + o * kw)}
    k = kh * kw
    if spec.mode == "rank":
        ri, ro = min(int(spec.value), c), min(int(spec.value), o)
    elif spec.mode == "energy":
        ro = energy_rank(_svd(w.reshape(o, -1))[1].numpy(), spec.value)
        ri = energy_rank(_svd(w.transpose(0, 1).reshape(c, -1))[1].numpy(), spec.value)
    else:
        ri, ro = 1, 1
        for cand in range(o, 0, -1):               # largest r_out whose factors fit
            cri = max(1, min(c, round(cand * c / o)))
            if _tucker_params(c, o, k, cri, cand) <= full / spec.value:
                ri, ro = cri, cand
                break
    return {"kind": "tucker", "rank": [ri, ro], "weights": full,
            "factor_weights": _tucker_params(c, o, k, ri, ro)}


def _candidates(model: nn.Module, spec: Spec) -> dict[str, nn.Module]:
    layers = {n: m for n, m in model.named_modules()
              if type(m) in (nn.Linear, nn.Conv2d) and n}
    if spec.layers is not None:
        unknown = sorted(set(spec.layers) - set(layers))
        if unknown:
            raise ValueError(f"--low-rank: layers {unknown} are not float conv / dense layers; "
                             f"layers: {', '.join(layers)}")
        return {n: layers[n] for n in spec.layers}
    names = list(layers)
    return {n: m for n, m in layers.items()
            if n != names[-1] and m.weight.numel() >= spec.min_weights
            and not (isinstance(m, nn.Conv2d) and m.in_channels == 1)}


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def decompose(model: nn.Module, spec: Spec | str) -> dict[str, dict]:
    """Replace the chosen layers of ``model`` in place by their factors; returns per layer
    ``{"kind", "rank", "weights", "factor_weights", "rel_error", "factors": [names]}`` (the
    relative Frobenius error of the reconstructed weight; layers left as they are get
    ``"kind": "kept"``)."""
    spec = parse_spec(spec)
    plans: dict[str, dict] = {}
    for name, m in _candidates(model, spec).items():
        plan = _linear_plan(m, spec) if isinstance(m, nn.Linear) else _conv_plan(m, spec)
        if plan["factor_weights"] >= plan["weights"]:
            plans[name] = dict(plan, kind="kept", factors=[name], rel_error=0.0)
            continue
        if plan["kind"] == "svd":
            new = svd_linear(m, plan["rank"])
        elif plan["kind"] == "spatial":
            new = spatial_conv(m, plan["rank"])
        else:
            new = tucker2_conv(m, *plan["rank"])
        rebuilt = reconstruct(new).to(m.weight.dtype)
        err = float((rebuilt - m.weight.detach()).norm() / m.weight.detach().norm().clamp_min(1e-30))
        _set(model, name, new)
        plans[name] = dict(plan, rel_error=err, factors=[f"{name}.{c}" for c, _ in new.named_children()])
    return plans


def reconstruct(seq: nn.Sequential) -> torch.Tensor:
    """The weight a factor Sequential (of :func:`svd_linear` / :func:`tucker2_conv` /
    :func:`spatial_conv`) computes, in the original layer's shape."""
    names = [n for n, _ in seq.named_children()]
    with torch.no_grad():
        if names == ["v", "u"]:
            return seq.u.weight.double() @ seq.v.weight.double()
        if names == ["first", "core", "last"]:
            u_in = seq.first.weight.double()[:, :, 0, 0]            # r_in x C
            u_out = seq.last.weight.double()[:, :, 0, 0]            # O x r_out
            return torch.einsum("abij,oa,bc->ocij", seq.core.weight.double(), u_out, u_in)
        if names == ["vertical", "horizontal"]:
            v = seq.vertical.weight.double()[..., 0]                # r x C x kh
            h = seq.horizontal.weight.double()[:, :, 0, :]          # O x r x kw
            return torch.einsum("rci,orj->ocij", v, h)
    raise ValueError(f"not a low-rank factor sequence: {names}")


def factor_names(plans: dict[str, dict]) -> dict[str, list[str]]:
    """Decomposed layer -> its factor layers' names (kept layers map to themselves)."""
    return {n: p["factors"] for n, p in plans.items()}


def expand_layer_spec(text: str | None, plans: dict[str, dict]) -> str | None:
    """A ``--prune`` / ``--share-bits`` / ``--index-bits`` layer spec written for the original
    layer names, with each decomposed layer's entry copied to all its factors."""
    if text is None:
        return None
    items = []
    for item in str(text).split(","):
        key, sep, value = item.strip().rpartition("=")
        if sep and key.strip() in plans:
            items += [f"{f}={value}" for f in plans[key.strip()]["factors"]]
        elif item.strip():
            items.append(item.strip())
    return ",".join(items)


def weight_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- lowbit lowrank -----------------------------------------------------------------------

def format_plans(plans: dict[str, dict]) -> str:
    lines = [f"{'layer':<10}{'kind':<9}{'rank':>10}{'weights':>10}{'factors':>10}{'ratio':>8}"
             f"{'rel. error':>12}"]
    for n, p in plans.items():
        r = "x".join(map(str, p["rank"])) if isinstance(p["rank"], list) else str(p["rank"])
        lines.append(f"{n:<10}{p['kind']:<9}{r:>10}{p['weights']:>10,}{p['factor_weights']:>10,}"
                     f"{p['weights'] / max(1, p['factor_weights']):>7.1f}x{p['rel_error']:>12.4f}")
    return "\n".join(lines)


def run(checkpoint: str, out: str, spec: Spec | str, epochs: int = 2, lr: float = 1e-4,
        batch_size: int = 128, seed: int = 0, threads: int | None = None,
        data: str | None = None, json_path: str | None = None, progress: bool = True,
        max_train: int | None = None, max_test: int | None = None,
        file_accuracy: Callable[[str, Any, Any], float] | None = None) -> dict:
    """Decompose a float checkpoint, fine-tune it ``epochs`` epochs (Adam, cosine from
    ``lr``) on its training split, export it as a model file ``out`` and report sizes and
    accuracies (``file_accuracy``: the runtime's, passed in by the CLI)."""
    from lowbit.cliargs import check_output_file
    from lowbit.data import subset, train_val_split

    from .checkpoint import load_model
    from .commands import load_shaped
    from .compress import _check_float, _data_root
    from .export import export_model
    from .loop import evaluate, fit
    t_start = time.perf_counter()
    if threads:
        torch.set_num_threads(int(threads))
    spec = parse_spec(spec)
    check_output_file(out, overwrite=True, source=checkpoint)
    model, meta = load_model(checkpoint, device="cpu")
    _check_float(model, checkpoint)
    if model.normalization is None:
        raise ValueError(f"{checkpoint}: field 'normalization': missing")
    cfg = meta.get("config") or {}
    root = _data_root(type("O", (), {"data": data})(), cfg)
    images, labels = load_shaped("train", root, meta["input_shape"])
    test = load_shaped("test", root, meta["input_shape"])
    train, _ = train_val_split(images, labels, val_size=int(cfg.get("val_size", 0) or 0),
                               seed=int(cfg.get("seed", 0) or 0))
    if max_train:
        train = subset(*train, min(max_train, len(train[1])), seed=seed)
    if max_test:
        test = subset(*test, min(max_test, len(test[1])), seed=seed)
    norm = model.normalization
    acc = lambda: evaluate(model, *test, normalization=norm)
    params_float = weight_count(model)
    acc_float = acc()
    plans = decompose(model, spec)
    params_lr = weight_count(model)
    acc_decomposed = acc()
    if epochs > 0:
        fit(model, train, None, epochs=epochs, lr=lr, batch_size=batch_size, optimizer="adam",
            schedule="cosine", weight_decay=0.0, seed=seed, device="cpu", normalization=norm,
            progress=progress)
    acc_tuned = acc()
    size = export_model(model, out, norm.to_dict(), {"model": meta["model"], "source": str(checkpoint),
                                                    "pipeline": "low-rank", "low_rank": str(spec)},
                        input_shape=tuple(meta["input_shape"]))
    acc_file = file_accuracy(out, *test) if file_accuracy is not None else acc_tuned
    report = {"model": meta["model"]["name"], "checkpoint": str(checkpoint), "out": str(out),
              "spec": str(spec), "layers": plans, "params_float": params_float,
              "params_low_rank": params_lr, "param_ratio": params_float / params_lr,
              "fp32_bytes": 4 * params_float, "file_bytes": size,
              "ratio": 4 * params_float / size, "acc_float": acc_float,
              "acc_decomposed": acc_decomposed, "acc_tuned": acc_tuned, "acc_file": acc_file,
              "acc_file_from": "file" if file_accuracy is not None else "torch",
              "epochs": epochs, "lr": lr, "test_images": int(len(test[1])),
              "train_images": int(len(train[1])), "wall_seconds": time.perf_counter() - t_start,
              "command": "lowbit " + " ".join(sys.argv[1:])}
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report


def format_report(r: dict) -> str:
    return "\n".join([
        f"low-rank {r['spec']} of {r['model']} ({r['checkpoint']})",
        format_plans(r["layers"]),
        f"parameters {r['params_float']:,} -> {r['params_low_rank']:,} "
        f"({r['param_ratio']:.2f}x); file {r['file_bytes']:,} bytes = "
        f"{r['ratio']:.2f}x smaller than fp32 ({r['fp32_bytes']:,} B)",
        f"test accuracy: float {r['acc_float']:.2%}, decomposed {r['acc_decomposed']:.2%}, "
        f"after {r['epochs']} fine-tuning epoch(s) {r['acc_tuned']:.2%}, file "
        f"({r['acc_file_from']}) {r['acc_file']:.2%}",
        f"written: {r['out']}; wall time {r['wall_seconds']:.0f} s"])


def main(checkpoint: str, out: str, spec: str, json_path: str | None = None,
         file_accuracy=None, **kw: Any) -> int:
    """``lowbit lowrank``: run and print; user errors -> one line, exit code 2."""
    from lowbit.data import DataError

    from .checkpoint import CheckpointError
    try:
        report = run(checkpoint, out, spec, json_path=json_path, file_accuracy=file_accuracy, **kw)
    except (DataError, CheckpointError, ValueError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lowbit lowrank: error: {msg}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0
