"""``lowbit report``: Markdown + PNG plots from a tiny synthetic benchmark JSON."""
import json

import pytest

pytest.importorskip("matplotlib")

from lowbit.bench import report as R  # noqa: E402
from lowbit.cli import main as cli_main  # noqa: E402


def _rec(method, system, batch, threads, p50, **kw):
    return {"method": method, "system": system, "batch": batch, "threads": threads,
            "latency_ms": {"p50": p50, "p90": 1.2 * p50}, "throughput": batch * 1e3 / p50, **kw}


def _records():
    recs = []
    for method, system, base, extra in (
            ("lenet5", "torch-fp32", 2.0, dict(acc=0.91, file_bytes=1_724_000,
                                               weight_bytes=1_724_000, macs=2_293_000, bops=0)),
            ("lenet5", "ort-int8", 0.8, dict(acc=0.905, file_bytes=447_000, weight_bytes=440_000)),
            ("bnn-lenet5", "lowbit", 0.2, dict(acc=0.88, file_bytes=60_000, weight_bytes=55_000,
                                               peak_rss_bytes=40_000_000, bops=9_000_000,
                                               layers=[{"name": "conv1", "op": "conv2d", "ms": 0.05},
                                                       {"name": "conv2", "op": "qconv2d", "ms": 0.1},
                                                       {"name": "fc1", "op": "qdense", "ms": 0.05}]))):
        for t in (1, 2):
            for b in (1, 4, 16):
                recs.append(_rec(method, system, b, t, base * (1 + 0.5 * b) / t,
                                 **(extra if (b, t) == (1, 1) else {})))
    return recs


def test_report_from_synthetic_json(tmp_path):
    run = tmp_path / "run1"
    run.mkdir()
    recs = _records()
    (run / "bench.json").write_text(json.dumps({"meta": {"cpu": "test"}, "records": recs[:9]}))
    (tmp_path / "more.json").write_text(json.dumps(recs[9:]))
    (run / "other.json").write_text(json.dumps({"not": "records"}))
    out = tmp_path / "report"
    assert cli_main(["report", str(run), str(tmp_path / "more.json"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    for s in ("lenet5 | torch-fp32", "bnn-lenet5 | lowbit", "91.00 %", "other.json: skipped",
              "Throughput (images/s) vs batch size", "2.50x"):
        assert s in md, s
    import matplotlib.image as mpimg
    for png in ("acc_vs_throughput", "latency_vs_batch", "model_size", "layer_times"):
        img = mpimg.imread(out / f"{png}.png")
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert f"({png}.png)" in md
    assert R.validate(recs) == []


def test_validate_flags_inconsistent_records():
    bad = _rec("m", "s", 8, 1, 4.0)
    bad["throughput"] = 100.0  # batch / p50 = 2000
    probs = R.validate([bad, {"method": "m"}])
    assert any("batch / p50" in p for p in probs) and any("missing" in p for p in probs)


def test_report_refuses_empty_input(tmp_path, capsys):
    (tmp_path / "x.json").write_text("[]")
    assert cli_main(["report", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no benchmark records" in capsys.readouterr().err


def _model(method, p50s, *, cpu=None, batches=(1, 16), **low):
    """Records of one method: ``p50s`` = {system: batch-1 p50 ms}; larger batches scale it."""
    recs = []
    for system, p50 in p50s.items():
        for b in batches:
            extra = dict(low) if system == "lowbit" else {}
            extra.update(macs=low.get("macs"), peak_rss_bytes=(40e6 if system == "lowbit"
                                                               else 70e6))
            r = _rec(method, system, b, 1, p50 * (1 + 0.3 * (b - 1)), **extra)
            r["cpu_ms"] = (cpu or {}).get(system, p50) * (1 + 0.3 * (b - 1))
            recs.append(r)
    return recs


def test_outcome_sentence_per_model_from_the_numbers(tmp_path):
    recs = _model("vgg", {"lowbit": 0.2, "torch-fp32": 4.0, "ort-fp32": 0.6, "ort-int8": 0.5},
                  cpu={"lowbit": 0.2, "torch-fp32": 1.0, "ort-fp32": 0.6, "ort-int8": 0.5},
                  macs=30_000_000, float_macs=600_000, bops=29_400_000, acc=0.85,
                  file_bytes=40_000, weight_bytes=39_000)
    recs += _model("dc", {"lowbit": 0.10, "torch-fp32": 0.3, "ort-fp32": 0.09, "ort-int8": 0.06},
                   macs=2_300_000, float_macs=2_300_000, bops=0, acc=0.851, file_bytes=35_000,
                   weight_bytes=1_720_000, acc_reference=0.855, reference_method="float")
    recs += _model("det", {"lowbit": 0.4, "ort-int8": 0.41}, macs=65_000_000,
                   float_macs=5_000_000, bops=60_000_000, quality=0.79,
                   quality_name="held-out mAP@0.5")
    path = R.write_report(recs, tmp_path, metas=[{"vnni": True}])
    md = path.read_text()
    out = md[md.index("## Outcome"):md.index("## Summary")]
    lines = [x for x in out.splitlines() if x.startswith("- ")]
    assert len(lines) == 3                                    # one sentence per model
    vgg, dc, det = (next(x for x in lines if x.startswith(f"- **{m}**")) for m in ("vgg", "dc", "det"))
    assert "20.0x faster than PyTorch fp32 (by CPU time 5.0x)" in vgg
    assert "2.5x faster than ORT int8" in vgg and "lowbit wins because" in vgg
    assert "98 % bitwise" in vgg and "85.00 % test accuracy" in vgg
    assert "at its best batch size (16) it does" in vgg and "40.00 MB peak RSS (ORT int8 70.00 MB" in vgg
    assert "1.7x slower than ORT int8" in dc
    assert "ORT int8 wins at batch 1 and on throughput because" in dc
    assert "no binary layers" in dc and "VNNI" in dc and "decoded to 1.72 MB of float32" in dc
    assert "-0.40 points vs float's 85.50 %" in dc
    assert "on par with ORT int8" in det and "held-out mAP@0.5 0.790" in det
    assert "wins" not in det
    # the sentences travel into docs/results.md with the tables
    md_file = tmp_path / "results.md"
    R.update_results_md(path, md_file)
    assert "### Outcome" in md_file.read_text() and vgg in md_file.read_text()


def test_plots_one_colour_per_system_marker_per_method_legend_outside(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lowbit.bench import report_plots as P
    figs = {}

    def keep(fig, out, name, plt_):
        figs[name] = fig
        return name
    monkeypatch.setattr(P, "_save", keep)
    per = R._per_system(_records())
    made = P.make_plots(per, tmp_path, plt)
    assert set(made) == {"acc_vs_throughput.png", "latency_vs_batch.png", "model_size.png",
                         "layer_times.png"}
    fig = figs["latency_vs_batch.png"]
    fig.canvas.draw()
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    colours = {ln.get_color() for ln in lines}
    assert len(colours) == len({s for _, s in per})            # one colour per system
    assert {ln.get_marker() for ln in lines} == {P.method_marker(m, [k[0] for k in per])
                                                 for m, _ in per}
    for name in ("latency_vs_batch.png", "acc_vs_throughput.png", "model_size.png"):
        f = figs[name]
        f.canvas.draw()
        legends = [ax.get_legend() for ax in f.axes if ax.get_legend() is not None]
        assert legends, name
        for ax in f.axes:
            leg = ax.get_legend()
            if leg is not None:                       # right of every axes of the figure
                x0 = leg.get_window_extent().x0
                assert all(x0 >= a.get_window_extent().x1 - 1 for a in f.axes), name
    assert P.system_color("lowbit", []) == P.SYSTEM_COLORS["lowbit"]
    assert P.system_color("mine", ["mine", "other"]) != P.system_color("other", ["mine", "other"])
    for f in figs.values():
        plt.close(f)


def test_outcome_says_why_lowbit_wins_on_a_compressed_float_model(tmp_path):
    recs = _model("dc", {"lowbit": 0.04, "ort-int8": 0.06}, macs=2_300_000,
                  float_macs=2_300_000, bops=0, file_bytes=38_000, weight_bytes=1_720_000)
    recs += _model("plain", {"lowbit": 0.06, "ort-int8": 0.06}, macs=2_300_000,
                   float_macs=2_300_000, bops=0, file_bytes=1_720_000, weight_bytes=1_720_000)
    md = R.write_report(recs, tmp_path).read_text()
    dc = next(x for x in md.splitlines() if x.startswith("- **dc**"))
    plain = next(x for x in md.splitlines() if x.startswith("- **plain**"))
    assert "1.5x faster than ORT int8" in dc and "nonzero weights only" in dc
    assert "on par with ORT int8" in plain and "wins" not in plain
