"""The PNG plots of :mod:`lowbit.bench.report`: one colour per system (the same in every plot),
one marker per method, legends outside the data area (right of the axes).

``per`` is the report's ``(method, system) -> {"records", "base", "best", fields...}`` map.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["SYSTEM_COLORS", "system_color", "method_marker", "make_plots"]

SYSTEM_COLORS = {"lowbit": "#d62728", "torch-fp32": "#1f77b4", "ort-fp32": "#2ca02c",
                 "ort-int8": "#ff7f0e"}
_SPARE = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p")
_THREAD_STYLES = ("-", "--", ":", "-.")


def _order(values):
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def system_color(system: str, systems) -> str:
    """The fixed colour of a standard system, else a spare one by first appearance."""
    if system in SYSTEM_COLORS:
        return SYSTEM_COLORS[system]
    others = [s for s in _order(systems) if s not in SYSTEM_COLORS]
    return _SPARE[others.index(system) % len(_SPARE)] if system in others else "#000000"


def method_marker(method: str, methods) -> str:
    ms = _order(methods)
    return _MARKERS[ms.index(method) % len(_MARKERS)] if method in ms else "o"


def _legend(fig, ax, per, threads=()):
    """One legend right of ``ax``: systems (colour), methods (marker), thread counts (line)."""
    from matplotlib.lines import Line2D
    systems = _order(k[1] for k in per)
    methods = _order(k[0] for k in per)
    h = [Line2D([], [], color=system_color(s, systems), lw=3, label=s) for s in systems]
    h += [Line2D([], [], color="0.3", marker=method_marker(m, methods), ls="none", label=m)
          for m in methods]
    if len(threads) > 1:
        h += [Line2D([], [], color="0.3", ls=_THREAD_STYLES[i % 4], label=f"{t} thread(s)")
              for i, t in enumerate(threads)]
    ax.legend(handles=h, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              fontsize=7, title="colour: system, marker: method", title_fontsize=7)


def _save(fig, out: Path, name: str, plt) -> str:
    fig.savefig(out / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


def _acc_plot(per, out, plt):
    pts = [(k, d) for k, d in per.items() if d.get("acc") is not None]
    if not pts:
        return None
    systems, methods = [k[1] for k in per], [k[0] for k in per]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (m, s), d in pts:
        ax.scatter(d["base"]["throughput"], 100 * d["acc"], s=55, color=system_color(s, systems),
                   marker=method_marker(m, methods), edgecolors="black", linewidths=0.4)
    ax.set_xscale("log")
    b = pts[0][1]["base"]
    ax.set_xlabel(f"throughput, images/s (batch {b['batch']}, {b['threads']} thread"
                  + ("s)" if b["threads"] != 1 else ")"))
    ax.set_ylabel("test accuracy, %")
    ax.set_title("accuracy vs throughput")
    ax.grid(alpha=0.3)
    _legend(fig, ax, per)
    return _save(fig, out, "acc_vs_throughput.png", plt)


def _batch_plot(per, out, plt):
    systems, methods = [k[1] for k in per], [k[0] for k in per]
    threads = sorted({r["threads"] for d in per.values() for r in d["records"]})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (m, s), d in per.items():
        for t in sorted({r["threads"] for r in d["records"]}):
            rs = sorted((r for r in d["records"] if r["threads"] == t), key=lambda r: r["batch"])
            b = [r["batch"] for r in rs]
            style = dict(color=system_color(s, systems), marker=method_marker(m, methods),
                         ls=_THREAD_STYLES[threads.index(t) % 4], ms=5, lw=1.2)
            a1.plot(b, [r["latency_ms"]["p50"] / r["batch"] for r in rs], **style)
            a2.plot(b, [r["throughput"] for r in rs], **style)
    batches = sorted({r["batch"] for d in per.values() for r in d["records"]})
    for ax, yl in ((a1, "latency per image, ms (p50 / batch)"), (a2, "throughput, images/s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3, which="both")
    _legend(fig, a2, per, threads)
    fig.subplots_adjust(wspace=0.3)
    fig.suptitle("latency and throughput vs batch size")
    return _save(fig, out, "latency_vs_batch.png", plt)


def _size_plot(per, out, plt):
    systems, methods = _order(k[1] for k in per), _order(k[0] for k in per)
    panels = [("file_bytes", "model file"), ("weight_bytes", "weights in RAM")]
    if any(d.get("peak_rss_bytes") for d in per.values()):
        panels.append(("peak_rss_bytes", "peak RSS (fresh process)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(8, 1.2 * len(methods) + 2)
                                                      * len(panels) / 2, 4.2))
    w = 0.8 / max(1, len(systems))
    for ax, (field, title) in zip(axes, panels):
        lo = None
        for j, s in enumerate(systems):
            xs, ys = [], []
            for i, m in enumerate(methods):
                v = (per.get((m, s)) or {}).get(field)
                if v:
                    xs.append(i + (j - (len(systems) - 1) / 2) * w)
                    ys.append(v / 1e6)
            ax.bar(xs, ys, w, color=system_color(s, systems), label=s)
            lo = min([lo] + ys) if lo is not None else min(ys, default=None)
        ax.set_yscale("log")
        if lo:
            ax.set_ylim(bottom=lo / 3)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("MB (log scale)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y", which="both")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7,
                    title="system", title_fontsize=7)
    fig.subplots_adjust(wspace=0.35)
    fig.suptitle("model size and memory")
    return _save(fig, out, "model_size.png", plt)


def _layer_plot(per, out, plt):
    prof = [(k, d["layers"]) for k, d in per.items() if d.get("layers")]
    if not prof:
        return None
    systems = [k[1] for k in per]
    n = sum(len(layers) for _, layers in prof)
    fig, axes = plt.subplots(len(prof), 1, figsize=(8, 0.9 + 0.28 * n + 0.6 * len(prof)),
                             squeeze=False)
    for ax, ((m, s), layers) in zip(axes[:, 0], prof):
        names = [f"{x['name']} ({x.get('op', '')})" for x in layers]
        ax.barh(range(len(layers)), [x["ms"] for x in layers], color=system_color(s, systems))
        ax.set_yticks(range(len(layers)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms per call")
        ax.set_title(f"{m} / {s}", fontsize=9)
    fig.tight_layout()
    return _save(fig, out, "layer_times.png", plt)


def make_plots(per, out: Path, plt) -> list[str]:
    """Write the plots into ``out``; returns the file names written."""
    made = [_acc_plot(per, out, plt), _batch_plot(per, out, plt), _size_plot(per, out, plt),
            _layer_plot(per, out, plt)]
    return [m for m in made if m]
