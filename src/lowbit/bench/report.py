"""``lowbit report RUN_DIR... --out DIR``: a Markdown report plus PNG plots from benchmark JSON.

Input: each argument is a JSON file or a folder whose ``*.json`` files (not recursive) are read;
files that do not hold records are skipped with a note.  A file holds either a list of records
or ``{"meta": {...}, "records": [...]}`` (``meta`` -- cpu, versions, command -- is echoed in the
report).  One record = one system measured at one batch size and thread count:

    field                  type          meaning
    method        (req.)   str           the model / compression method ("bnn-vgg-small", ...)
    system        (req.)   str           "lowbit", "torch-fp32", "ort-fp32", "ort-int8", ...
    batch         (req.)   int           images per call
    threads       (req.)   int           CPU threads
    latency_ms    (req.)   {p50, p90}    wall time of one call (the whole batch), ms
    throughput    (req.)   float         images/s = batch / p50 (checked: within 5 %)
    latency_per_image_ms   float         p50 / batch
    cpu_ms                 float         median CPU time of one call (all threads)
    import_rss_bytes       int           RSS of the fresh process after imports only
    acc                    float         test accuracy, 0..1
    file_bytes             int           model file on disk
    weight_bytes           int           resident weight bytes
    peak_rss_bytes         int           peak process RSS (fresh process, lowbit.bench.measure)
    acc_reference          float         accuracy of the model this one was derived from (e.g.
                                         the float model a Deep Compression file came from)
    reference_method       str           that model's name
    quality, quality_name  float, str    a score other than accuracy ("held-out mAP@0.5")
    macs, float_macs, bops int           per image
    layers                 [{name, op, ms}]  per-layer time of one call (optional profile)

Size, memory, accuracy and op fields may sit on any one record of a (method, system) pair; the
first value found is used.  Records of several runs are merged by (method, system, batch,
threads): for the tables the first record of a pair is its summary, the last one per batch
its throughput -- report one run per (method, system) to avoid mixing.  Output: ``report.md``
(an "Outcome" sentence per method, :mod:`lowbit.bench.report_text`; the tables) and the plots of
:mod:`lowbit.bench.report_plots`: ``acc_vs_throughput.png``, ``latency_vs_batch.png``,
``model_size.png``, ``layer_times.png`` (the last only with layer times; the first only with
accuracies).
"""
from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path

from lowbit.bench.report_plots import make_plots
from lowbit.bench.report_text import outcome_sentences

__all__ = ["load_records", "validate", "write_report", "main", "REQUIRED"]

REQUIRED = ("method", "system", "batch", "threads", "latency_ms", "throughput")
_PER_SYSTEM = ("acc", "file_bytes", "weight_bytes", "peak_rss_bytes", "import_rss_bytes", "macs",
               "float_macs", "bops", "acc_reference", "reference_method", "quality",
               "quality_name")


def load_records(paths) -> tuple[list[dict], list[dict], list[str]]:
    """``(records, metas, notes)`` from files / folders (module docstring)."""
    records, metas, notes = [], [], []
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.glob("*.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"lowbit report: {p}: no such file or folder")
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            notes.append(f"{f}: skipped ({exc})")
            continue
        meta = {}
        if isinstance(data, dict) and isinstance(data.get("records"), list):
            meta, data = dict(data.get("meta") or {}), data["records"]
        if not (isinstance(data, list) and data and all(isinstance(r, dict) for r in data)
                and all(k in data[0] for k in REQUIRED)):
            notes.append(f"{f}: skipped (no benchmark records)")
            continue
        meta["source"] = str(f)
        metas.append(meta)
        records += data
    return records, metas, notes


def validate(records: list[dict]) -> list[str]:
    """Problems found: missing required fields, non-positive times, throughput != batch / p50."""
    problems = []
    for i, r in enumerate(records):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            problems.append(f"record {i}: missing {', '.join(missing)}")
            continue
        p50, p90 = r["latency_ms"].get("p50"), r["latency_ms"].get("p90")
        if not (p50 and p50 > 0 and p90 and p90 >= p50 * 0.999 and r["throughput"] > 0):
            problems.append(f"record {i} ({r['system']}): latency/throughput not positive "
                            f"or p90 < p50")
            continue
        want = r["batch"] * 1e3 / p50
        if abs(r["throughput"] - want) > 0.05 * want:
            problems.append(f"record {i} ({r['system']}): throughput {r['throughput']:.1f} != "
                            f"batch / p50 = {want:.1f}")
    return problems


def _key(r):
    return (r["method"], r["system"])


def _per_system(records):
    """OrderedDict (method, system) -> merged per-system fields + its records."""
    out: "OrderedDict[tuple, dict]" = OrderedDict()
    for r in records:
        d = out.setdefault(_key(r), {"records": []})
        d["records"].append(r)
        for k in _PER_SYSTEM + ("layers",):
            if d.get(k) is None and r.get(k) is not None:
                d[k] = r[k]
    for d in out.values():
        rs = d["records"]
        t0 = min(r["threads"] for r in rs)
        b1 = [r for r in rs if r["batch"] == min(x["batch"] for x in rs) and r["threads"] == t0]
        d["base"] = b1[0]                                  # smallest batch, fewest threads
        d["best"] = max(rs, key=lambda r: r["throughput"])
    return out


def _fmt(v, kind="num"):
    if v is None:
        return "-"
    if kind == "bytes":
        return f"{v / 1e6:.2f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"
    if kind == "acc":
        return f"{100 * v:.2f} %"
    if kind == "ops":
        return f"{v / 1e6:.1f} M"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}"


def write_report(records: list[dict], out_dir, metas=(), notes=()) -> Path:
    """Write ``report.md`` and the plots into ``out_dir``; returns the report path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems = validate(records)
    good = [r for i, r in enumerate(records) if all(k in r for k in REQUIRED)]
    per = _per_system(good)
    made = make_plots(per, out, plt)
    torch_ref = {k[0]: d["base"] for k, d in per.items() if k[1] == "torch-fp32"}

    L = ["# lowbit benchmark report", ""]
    for m in metas:
        L.append("- " + ", ".join(f"{k}: {v}" for k, v in m.items()))
    L += ["", "## Outcome", "", "One sentence per model, generated from the records below "
          "(speed-ups = their p50 / lowbit's p50 at the same batch and threads).", ""]
    L += [f"- {x}" for x in outcome_sentences(per, metas)]
    L += ["", "## Summary (per method and system)", "",
          "Latency = p50 / p90 wall time per call at the smallest batch and fewest threads "
          "measured; best throughput over all batch sizes and thread counts; speed-up = "
          "torch-fp32 p50 / this p50 at that point (same method).", "",
          "| method | system | acc | latency p50 / p90 ms (batch, threads) | CPU ms | speed-up vs torch "
          "| best images/s (batch, threads) | file | weights | peak RSS | MACs | BOPs |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, system), d in per.items():
        b, best = d["base"], d["best"]
        ref = torch_ref.get(method)
        sp = (f"{ref['latency_ms']['p50'] / b['latency_ms']['p50']:.2f}x"
              if ref and ref["batch"] == b["batch"] and ref["threads"] == b["threads"] else "-")
        L.append(f"| {method} | {system} | {_fmt(d.get('acc'), 'acc')} | "
                 f"{b['latency_ms']['p50']:.3f} / {b['latency_ms']['p90']:.3f} "
                 f"({b['batch']}, {b['threads']}) | {_fmt(b.get('cpu_ms'))} | {sp} | {best['throughput']:,.0f} "
                 f"({best['batch']}, {best['threads']}) | {_fmt(d.get('file_bytes'), 'bytes')} | "
                 f"{_fmt(d.get('weight_bytes'), 'bytes')} | {_fmt(d.get('peak_rss_bytes'), 'bytes')}"
                 f" | {_fmt(d.get('macs'), 'ops')} | {_fmt(d.get('bops'), 'ops')} |")
    batches = sorted({r["batch"] for r in good})
    if len(batches) > 1:
        L += ["", "## Throughput (images/s) vs batch size", "",
              "| method | system | threads | " + " | ".join(map(str, batches)) + " |",
              "|---|---|---|" + "---|" * len(batches)]
        for (method, system), d in per.items():
            for t in sorted({r["threads"] for r in d["records"]}):
                row = {r["batch"]: r["throughput"] for r in d["records"] if r["threads"] == t}
                L.append(f"| {method} | {system} | {t} | " + " | ".join(
                    f"{row[b]:,.0f}" if b in row else "-" for b in batches) + " |")
    L += ["", "## Plots", ""] + [f"![{p[:-4]}]({p})" for p in made]
    if problems or notes:
        L += ["", "## Problems", ""] + [f"- {p}" for p in list(notes) + problems]
    path = out / "report.md"
    path.write_text("\n".join(L) + "\n")
    return path


BEGIN = "<!-- lowbit report: begin (generated by `lowbit report ... --results-md`; do not edit) -->"
END = "<!-- lowbit report: end -->"


def update_results_md(report_path, md_path, sources=(), heading: str = "## Measured (generated)") -> Path:
    """Replace the section between :data:`BEGIN` and :data:`END` of ``md_path`` (appended when
    the markers are absent) with the tables of ``report_path`` (a ``report.md``): the numbers in
    the docs come from the JSON, not from a hand."""
    text = Path(report_path).read_text()
    first = next((h for h in ("## Outcome", "## Summary") if h in text), None)
    body = text[text.index(first):] if first else text
    body = body.split("\n## Plots", 1)[0].rstrip()
    body = body.replace("## ", "### ")
    rel = Path(report_path).parent
    lines = [BEGIN, heading, "",
             f"From {', '.join(map(str, sources)) or 'the benchmark JSON'}; full report with "
             f"plots: `{rel}/report.md`.", "", body, "", END]
    section = "\n".join(lines)
    md = Path(md_path)
    old = md.read_text() if md.exists() else ""
    if BEGIN in old and END in old:
        a, b = old.index(BEGIN), old.index(END) + len(END)
        new = old[:a] + section + old[b:]
    else:
        new = old.rstrip() + ("\n\n" if old else "") + section + "\n"
    md.write_text(new)
    return md


def main(paths, out_dir, results_md=None) -> int:
    try:
        records, metas, notes = load_records(paths)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not records:
        print("lowbit report: no benchmark records found in " + ", ".join(map(str, paths)),
              file=sys.stderr)
        for n in notes:
            print("  " + n, file=sys.stderr)
        return 2
    path = write_report(records, out_dir, metas, notes)
    problems = validate(records)
    for p in problems:
        print(f"lowbit report: warning: {p}", file=sys.stderr)
    print(f"wrote {path} and plots in {path.parent} ({len(records)} records)")
    if results_md:
        print(f"updated {update_results_md(path, results_md, paths)}")
    return 0
