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
