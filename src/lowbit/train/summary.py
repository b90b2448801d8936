"""Per-layer size and cost of a model: parameters, bytes, MACs, with totals.

``summarize(model)`` runs one forward pass on a zero input of shape ``(1, 1, 28, 28)`` with
hooks on every module that owns parameters (or is a conv / linear layer) and returns a
``Summary`` of ``LayerRow`` s.

Extension points for low-bit layers:

- ``LayerRow.bits``: weight bits, read from the layer's ``weight_bits`` attribute (or ``bits``)
  when it has one; ``None`` means float32.  ``packed_bytes`` then counts the weight at that
  width (other parameters such as biases and BatchNorm stay 32-bit).
- A layer may define ``macs(input, output) -> int`` to report its own multiply-accumulates;
  otherwise conv and linear layers are counted from their shapes and everything else as 0.
- ``LayerRow.extra``: free-form columns (e.g. binary ops) that ``format_table`` prints; a layer
  fills them with ``summary_extra(input, output) -> dict`` (lowbit.train.layers: ``in bits``,
  ``BOPs``, ``float MACs``; other layers then count their MACs as float MACs).  Integer extra
  columns are summed in the total row.
- A layer may define ``packed_weight_bytes() -> int`` to give its exact packed size (e.g. rows
  padded to 64-bit words plus float scales); it replaces the ``bits``-based estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["LayerRow", "Summary", "summarize", "format_table", "count_macs"]

INPUT_SHAPE = (1, 1, 28, 28)


@dataclass
class LayerRow:
    """One layer: qualified name, class name, output shape, parameter count and MACs."""

    name: str
    kind: str
    output_shape: tuple
    params: int
    weight_params: int
    macs: int
    bits: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    packed: int | None = None  # the layer's own packed_weight_bytes(), when it has one

    @property
    def bytes_fp32(self) -> int:
        """Memory of all parameters as float32."""
        return 4 * self.params

    @property
    def packed_bytes(self) -> int:
        """Memory with the weight at ``bits`` bits (rounded up to whole bytes), the rest fp32."""
        if self.packed is not None:
            return self.packed
        if self.bits is None:
            return self.bytes_fp32
        return (self.weight_params * self.bits + 7) // 8 + 4 * (self.params - self.weight_params)


@dataclass
class Summary:
    rows: list[LayerRow]
    input_shape: tuple

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def bytes_fp32(self) -> int:
        return sum(r.bytes_fp32 for r in self.rows)

    @property
    def packed_bytes(self) -> int:
        return sum(r.packed_bytes for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)


def count_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-accumulates of one call: the layer's own ``macs()`` if defined, else conv /
    linear from shapes (per output element: in_channels/groups * kernel area, or in_features),
    else 0."""
    own = getattr(module, "macs", None)
    if callable(own):
        return int(own(inp, out))
    if isinstance(module, nn.modules.conv._ConvNd):
        per_out = (module.in_channels // module.groups) * int(torch.tensor(module.kernel_size).prod())
        return int(out.numel()) * per_out
    if isinstance(module, nn.Linear):
        return int(out.numel()) * module.in_features
    return 0


def _bits(module: nn.Module) -> int | None:
    for attr in ("weight_bits", "bits"):
        b = getattr(module, attr, None)
        if isinstance(b, int) and not isinstance(b, bool):
            return b
    return None


def summarize(model: nn.Module, input_shape: tuple = INPUT_SHAPE) -> Summary:
    """Rows for every module that owns parameters directly or is a conv / linear layer."""
    rows: dict[str, LayerRow] = {}
    hooks = []

    def watch(name: str, mod: nn.Module):
        def hook(m, args, out):
            inp = args[0] if args else None
            own = list(m.parameters(recurse=False))
            w = getattr(m, "weight", None)
            row = rows.get(name)
            macs = count_macs(m, inp, out)
            if row is None:
                rows[name] = LayerRow(
                    name=name, kind=type(m).__name__,
                    output_shape=tuple(out.shape) if isinstance(out, torch.Tensor) else (),
                    params=sum(p.numel() for p in own),
                    weight_params=w.numel() if isinstance(w, nn.Parameter) else 0,
                    macs=macs, bits=_bits(m))
                extra = getattr(m, "summary_extra", None)
                if callable(extra):
                    rows[name].extra.update(extra(inp, out))
                packed = getattr(m, "packed_weight_bytes", None)
                if callable(packed):
                    rows[name].packed = int(packed())
            else:  # a module called twice in one forward pass
                row.macs += macs
        return hook

    for name, mod in model.named_modules():
        if name and (any(True for _ in mod.parameters(recurse=False))
                     or isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear, nn.MaxPool2d,
                                         nn.AvgPool2d, nn.ReLU, nn.BatchNorm1d, nn.BatchNorm2d))):
            hooks.append(mod.register_forward_hook(watch(name, mod)))
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for name, mod in model.named_modules():  # parameters the forward pass never touched
        own = list(mod.parameters(recurse=False))
        if name not in rows and own:
            w = getattr(mod, "weight", None)
            rows[name] = LayerRow(name, type(mod).__name__, (), sum(p.numel() for p in own),
                                  w.numel() if isinstance(w, nn.Parameter) else 0, 0, _bits(mod),
                                  {"note": "not called"})
    if any("float MACs" in r.extra for r in rows.values()):
        for r in rows.values():
            if r.macs and "float MACs" not in r.extra:
                r.extra.update({"BOPs": 0, "float MACs": r.macs})
    return Summary(list(rows.values()), tuple(input_shape))  # order of first call


def _fmt_bytes(n: int) -> str:
    return f"{n:,}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def format_table(summary: Summary) -> str:
    """A plain-text table; a ``bits`` and ``packed`` column appear when any layer has bits."""
    with_bits = any(r.bits is not None for r in summary.rows)
    extra_keys = sorted({k for r in summary.rows for k in r.extra})
    head = ["layer", "type", "output", "params", "bytes fp32"]
    if with_bits:
        head += ["bits", "packed bytes"]
    head += ["MACs"] + extra_keys
    lines = []
    for r in summary.rows:
        cells = [r.name, r.kind, "x".join(map(str, r.output_shape[1:])), f"{r.params:,}",
                 _fmt_bytes(r.bytes_fp32)]
        if with_bits:
            cells += ["32" if r.bits is None else str(r.bits), _fmt_bytes(r.packed_bytes)]
        cells += [f"{r.macs:,}"] + [f"{v:,}" if _is_int(v) else str(v)
                                    for v in (r.extra.get(k, "") for k in extra_keys)]
        lines.append(cells)
    total = ["total", "", "", f"{summary.params:,}", _fmt_bytes(summary.bytes_fp32)]
    if with_bits:
        total += ["", _fmt_bytes(summary.packed_bytes)]
    sums = {k: sum(r.extra.get(k, 0) for r in summary.rows) for k in extra_keys
            if k != "in bits" and all(_is_int(r.extra.get(k, 0)) for r in summary.rows)}
    total += [f"{summary.macs:,}"] + [f"{sums[k]:,}" if k in sums else "" for k in extra_keys]
    widths = [max(len(c[i]) for c in [head, total, *lines]) for i in range(len(head))]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(fmt(head))
    return "\n".join([fmt(head), rule, *map(fmt, lines), rule, fmt(total)])
