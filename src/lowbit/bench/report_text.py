"""The outcome of :mod:`lowbit.bench.report` in words: one sentence per method, generated from
the measured records (nothing hard-coded): what the model is, its accuracy, lowbit's latency
against every baseline at the smallest batch, best throughput against ORT int8's best over
the batch sizes both measured, sizes and peak memory -- and, where a baseline wins, which one and why
(the reason is read off the model's op counts: no binary layers, or a float share and per-call
overhead that outweigh the binary layers).

Thresholds: "faster" / "slower" when the ratio is outside 1/1.1 .. 1.1, else "on par".
"""
from __future__ import annotations

__all__ = ["outcome_sentences", "TIE"]

TIE = 1.1
_NAMES = {"torch-fp32": "PyTorch fp32", "ort-fp32": "ORT fp32", "ort-int8": "ORT int8"}


def _ms(v: float) -> str:
    return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"


def _mb(v) -> str:
    return f"{v / 1e6:.2f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


def _name(system: str) -> str:
    return _NAMES.get(system, system)


def _at(d: dict, batch: int, threads: int):
    return next((r for r in d["records"] if r["batch"] == batch and r["threads"] == threads), None)


def _versus(ratio: float, system: str, cpu_ratio: float | None = None) -> str:
    """``ratio`` = their p50 / lowbit p50; ``cpu_ratio`` the same by median CPU time, named
    when it differs by more than 25 % (a descheduled process on a loaded machine)."""
    if ratio >= TIE:
        s = f"{ratio:.1f}x faster than {_name(system)}"
    elif ratio <= 1 / TIE:
        s = f"{1 / ratio:.1f}x slower than {_name(system)}"
    else:
        s = f"on par with {_name(system)} ({ratio:.2f}x)"
    if cpu_ratio and not 0.8 <= cpu_ratio / ratio <= 1.25:
        s += f" (by CPU time {cpu_ratio:.1f}x)"
    return s


def _threads(t: int) -> str:
    return f"{t} thread" + ("" if t == 1 else "s")


def _compressed(low: dict) -> bool:
    """A file much smaller than its weights once loaded (Deep Compression)."""
    fb, wb = low.get("file_bytes"), low.get("weight_bytes")
    return bool(fb and wb and fb < 0.5 * wb)


def _why_lowbit(low: dict) -> str:
    """Why lowbit beats ORT int8 on this model, from its op counts ("" when unknown)."""
    if low.get("bops"):
        return ("its binary layers run as XNOR and popcount on packed bits (64 weights per "
                "64-bit word), where ORT int8 still does one 8-bit multiply-add per weight")
    if _compressed(low):
        return ("its pruned layers are multiplied by their nonzero weights only (the native "
                "executor's sparse products), where ORT int8 runs them dense")
    return ""


def _kind(low: dict) -> str:
    macs, bops, fmacs = low.get("macs"), low.get("bops") or 0, low.get("float_macs")
    if not macs:
        return "model"
    if bops:
        return (f"binary, {macs / 1e6:.1f} M MACs per image of which "
                f"{100 * (1 - (fmacs or 0) / macs):.0f} % bitwise")
    fb, wb = low.get("file_bytes"), low.get("weight_bytes")
    if fb and wb and fb < 0.5 * wb:
        return (f"float, {macs / 1e6:.1f} M MACs per image, stored compressed: {_mb(fb)} "
                f"file, {_mb(wb)} of float32 weights once loaded")
    return f"float, {macs / 1e6:.1f} M MACs per image"


def _quality(low: dict) -> str:
    if low.get("acc") is not None:
        s = f"{100 * low['acc']:.2f} % test accuracy"
        ref = low.get("acc_reference")
        if ref is not None:
            s += (f", {100 * (low['acc'] - ref):+.2f} points vs "
                  f"{low.get('reference_method') or 'its reference model'}'s {100 * ref:.2f} %")
        return s
    if low.get("quality") is not None:
        return f"{low.get('quality_name') or 'quality'} {low['quality']:.3f}"
    return ""


def _why_int8(low: dict, vnni: bool) -> str:
    """Why ORT int8 is faster than lowbit on this model, from its op counts."""
    macs, bops, fmacs = low.get("macs") or 0, low.get("bops") or 0, low.get("float_macs") or 0
    isa = " (VNNI on this CPU)" if vnni else ""
    fb, wb = low.get("file_bytes"), low.get("weight_bytes")
    if not bops:
        s = (f"this model has no binary layers, so lowbit runs all its MACs in fp32 while ORT "
             f"int8 multiplies 8-bit integers{isa}")
        if _compressed(low):
            s += (f"; the {_mb(fb)} compressed file is decoded to {_mb(wb)} of float32 "
                  f"weights at load")
        return s
    share = 100 * fmacs / macs if macs else 0
    return (f"at {macs / 1e6:.1f} M MACs per image the model is too small for its binary "
            f"layers to pay: per-call overhead and the {share:.0f} % of MACs in float layers "
            f"(first / last, fp32 in lowbit, 8-bit in ORT int8{isa}) dominate")


def _throughput(per, method, low) -> tuple[str, float | None]:
    """Best throughput over the batch sizes both measured (same threads), lowbit vs ORT int8:
    the best point, not the largest batch, which is the noisiest (fewest repeats)."""
    int8 = per.get((method, "ort-int8"))
    if not int8:
        return "", None
    t0 = low["base"]["threads"]
    common = {r["batch"] for r in low["records"] if r["threads"] == t0} \
        & {r["batch"] for r in int8["records"] if r["threads"] == t0}
    if len(common) < 2:
        return "", None
    a, c = (max((r for r in d["records"] if r["threads"] == t0 and r["batch"] in common),
                key=lambda r: r["throughput"]) for d in (low, int8))
    ratio = a["throughput"] / c["throughput"]
    word = "more than" if ratio >= TIE else "fewer than" if ratio <= 1 / TIE else "about as many as"
    return (f"; at its best batch size ({a['batch']}) it does {a['throughput']:,.0f} images/s, "
            f"{word} ORT int8 at its best ({c['throughput']:,.0f} at batch {c['batch']}, "
            f"{ratio:.2f}x)"), ratio


def _memory(per, method, low) -> str:
    parts = []
    others = [(s, per[(method, s)]) for s in ("ort-int8", "ort-fp32", "torch-fp32")
              if (method, s) in per]
    if low.get("file_bytes") and others and others[0][1].get("file_bytes"):
        parts.append(f"a {_mb(low['file_bytes'])} file ({_name(others[0][0])} "
                     f"{_mb(others[0][1]['file_bytes'])})")
    rss = [(s, d["peak_rss_bytes"]) for s, d in others if d.get("peak_rss_bytes")]
    if low.get("peak_rss_bytes") and rss:
        parts.append(f"{_mb(low['peak_rss_bytes'])} peak RSS (" + ", ".join(
            f"{_name(s)} {_mb(v)}" for s, v in rss) + ")")
    return ("; it needs " + " and ".join(parts)) if parts else ""


def _sentence(per, method, vnni) -> str:
    low = per.get((method, "lowbit"))
    if low is None:
        return f"**{method}**: no lowbit record, nothing to compare."
    b = low["base"]
    bt, tt = b["batch"], b["threads"]
    ratios, cpu = {}, {}
    for s in ("torch-fp32", "ort-fp32", "ort-int8"):
        other = per.get((method, s))
        r = _at(other, bt, tt) if other else None
        if r:
            ratios[s] = r["latency_ms"]["p50"] / b["latency_ms"]["p50"]
            if r.get("cpu_ms") and b.get("cpu_ms"):
                cpu[s] = r["cpu_ms"] / b["cpu_ms"]
    head = f"**{method}** ({_kind(low)}"
    q = _quality(low)
    head += f"; {q})" if q else ")"
    s = (f"{head}: lowbit takes {_ms(b['latency_ms']['p50'])} per call at batch {bt}, "
         f"{_threads(tt)}")
    if ratios:
        s += ", " + ", ".join(_versus(v, k, cpu.get(k)) for k, v in ratios.items())
    text, tput = _throughput(per, method, low)
    s += text + _memory(per, method, low)
    int8 = ratios.get("ort-int8")
    where = [w for w, r in ((f"at batch {bt}", int8), ("on throughput", tput))
             if r is not None and r <= 1 / TIE]
    if where:
        s += f". ORT int8 wins {' and '.join(where)} because {_why_int8(low, vnni)}"
    elif int8 is not None and int8 >= TIE and _why_lowbit(low):
        s += f". lowbit wins because {_why_lowbit(low)}"
    return s + "."


def outcome_sentences(per, metas=()) -> list[str]:
    """One Markdown sentence per method, in the order the methods first appear."""
    vnni = any(m.get("vnni") for m in metas)
    methods = []
    for m, _ in per:
        if m not in methods:
            methods.append(m)
    return [_sentence(per, m, vnni) for m in methods]
