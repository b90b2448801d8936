"""``lowbit bench model`` with baselines: every record field present, positive, consistent;
the accuracy it reports is ``lowbit eval`` / ``lowbit run``'s; profiles; results.md section.
Tiny settings: no assertion on absolute time."""
import json

import numpy as np
import pytest
import torch

from lowbit.bench import report
from lowbit.bench.model import main, runtime_accuracy, sweep_model
from lowbit.runtime.graph import Runtime
from lowbit.train.checkpoint import build_model
from lowbit.train.export import export_model

NORM = {"mean": 0.286, "std": 0.353}


def _data_or_skip():
    from lowbit.data import DataError, load
    try:
        load("test")
    except DataError:
        pytest.skip("Fashion-MNIST not available")


@pytest.fixture(scope="module")
def bnn_file(tmp_path_factory):
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("m") / "b.lbm"
    export_model(build_model("bnn-lenet5").eval(), p, NORM)
    return p


def test_export_stores_the_model_spec(bnn_file):
    from lowbit import codec
    assert codec.load(bnn_file).meta["model"] == {"name": "bnn-lenet5", "kwargs": {}}


def test_sweep_records_complete_and_consistent(bnn_file):
    _data_or_skip()
    res = sweep_model(str(bnn_file), (1, 4), (1,), repeats=3, warmup=1, data="fashion-mnist",
                      progress=False)
    recs = res["records"]
    systems = {"lowbit", "torch-fp32", "ort-fp32", "ort-int8"}
    assert {r["system"] for r in recs} == systems
    assert len(recs) == 2 * len(systems)
    assert report.validate(recs) == []
    for r in recs:
        assert r["method"] == "bnn-lenet5"
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] * 1.0001
        assert r["throughput"] == pytest.approx(r["batch"] * 1e3 / lat["p50"], rel=1e-6)
        assert r["latency_per_image_ms"] == pytest.approx(lat["p50"] / r["batch"])
        for k in ("weight_bytes", "macs", "cpu_ms"):
            assert r[k] > 0, (r["system"], k)
        if r["system"] != "torch-fp32":
            assert r["file_bytes"] > 0
    low = [r for r in recs if r["system"] == "lowbit"]
    assert all(r["bops"] > 0 and 0 <= r["acc"] <= 1 for r in low)
    layers = next(r["layers"] for r in low if "layers" in r)
    # native executor: ops fused into their producer (BN, activations) and aliases (flatten of
    # bits) take 0 ms of their own
    assert layers and all(l["ms"] >= 0 for l in layers) and sum(l["ms"] > 0 for l in layers) >= 3
    # the binary file is smaller than the fp32 ONNX file of its float twin
    fb = {r["system"]: r.get("file_bytes") for r in recs}
    assert fb["lowbit"] < fb["ort-fp32"]


def test_bench_accuracy_equals_lowbit_eval_and_run(tmp_path):
    _data_or_skip()
    from lowbit.runtime.evaluate import evaluate_file
    torch.manual_seed(0)
    p = tmp_path / "f.lbm"
    export_model(build_model("lenet300").eval(), p, NORM)
    res = sweep_model(str(p), (1,), (1,), repeats=1, warmup=1, data="fashion-mnist",
                      progress=False, systems=("torch-fp32",), profile=False)
    acc = next(r["acc"] for r in res["records"] if r["system"] == "lowbit")
    assert acc == evaluate_file(str(p))["accuracy"]             # lowbit eval FILE
    assert acc == runtime_accuracy(str(p))["acc"]                 # lowbit run FILE


def test_main_multi_batch_json_keeps_the_old_keys(bnn_file, tmp_path):
    out = tmp_path / "b.json"
    assert main(str(bnn_file), "1,2", str(out), repeats=1, progress=False,
                systems=("torch-fp32",)) == 0
    r = json.loads(out.read_text())
    assert r["speedup"] == pytest.approx(r["torch_ms"] / r["lowbit_ms"])
    assert {x["batch"] for x in r["records"]} == {1, 2}
    recs, _, notes = report.load_records([out])          # the report reads it as is
    assert len(recs) == 4 and not notes


def test_profile_covers_every_op(bnn_file):
    rt = Runtime(bnn_file)
    x = np.zeros((2, 28, 28), np.uint8)
    prof = {}
    ref = rt.logits(x)
    assert np.array_equal(rt.logits(x, profile=prof), ref)
    assert set(prof) == {"input"} | {rt.op_label(i) for i in range(len(rt.ops))}
    rows = rt.profile_ops(x, calls=2)
    assert len(rows) == len(rt.ops) + 1 and all(r["ms"] >= 0 for r in rows)


def test_results_md_section_is_regenerated(tmp_path):
    rec = {"method": "m", "system": "lowbit", "batch": 1, "threads": 1,
           "latency_ms": {"p50": 2.0, "p90": 3.0}, "throughput": 500.0}
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r.json").write_text(json.dumps([rec]))
    md = tmp_path / "results.md"
    md.write_text("# results\n\nhand-written text\n")
    assert report.main([str(tmp_path / "runs")], str(tmp_path / "rep"), str(md)) == 0
    first = md.read_text()
    assert "hand-written text" in first and report.BEGIN in first and "2.000 / 3.000" in first
    rec["latency_ms"] = {"p50": 4.0, "p90": 5.0}
    rec["throughput"] = 250.0
    (tmp_path / "runs" / "r.json").write_text(json.dumps([rec]))
    assert report.main([str(tmp_path / "runs")], str(tmp_path / "rep"), str(md)) == 0
    second = md.read_text()
    assert second.count(report.BEGIN) == 1 and "4.000 / 5.000" in second
    assert "2.000 / 3.000" not in second and "hand-written text" in second


@pytest.mark.slow
def test_demo_quick(tmp_path):
    _data_or_skip()
    from lowbit.demo import main as demo
    assert demo(out=str(tmp_path / "demo"), quick=True) == 0
    d = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert set(d["accuracy"]) >= {"lenet5-float", "bnn-lenet5"}
    for m, f in d["files"].items():
        assert d["accuracy"][m] == runtime_accuracy(f)["acc"]
    assert (tmp_path / "demo" / "report" / "report.md").exists()
    assert (tmp_path / "demo" / "report" / "layer_times.png").exists()
    assert set(d["accuracy"]) >= {"lenet5-deep-compression", "bnn-vgg-small"}
    assert d["cpu_seconds"] > 0 and {"train_lenet5", "benchmarks", "video"} <= set(d["stages"])
    recs = [r for f in (tmp_path / "demo" / "bench").glob("*.json")
            for r in json.loads(f.read_text())["records"]]
    assert {r["method"] for r in recs} >= {"lenet5-float", "bnn-vgg-small", "bnn-detector"}
    assert all(r.get("peak_rss_bytes", 0) > 0 for r in recs)      # every system, every model
    md = (tmp_path / "demo" / "report" / "report.md").read_text()
    outcome = md[md.index("## Outcome"):md.index("## Summary")]
    assert outcome.count("\n- **") == len({r["method"] for r in recs})
