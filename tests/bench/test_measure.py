"""lowbit.bench.measure: interleaved timing records, sweep, peak RSS, op counts."""
import numpy as np
import pytest

from lowbit.bench import measure as M
from lowbit.bench.baselines import Runner


def _runners(calls):
    def mk(name, n):
        def run(x):
            calls.append(name)
            return np.tanh(np.ones((len(x), n))).sum()
        return Runner(name, run, threads=1)
    return [mk("a", 1000), mk("b", 20000), mk("c", 5000)]


def test_time_systems_fields_consistent_and_interleaved():
    calls = []
    rs = _runners(calls)
    recs = M.time_systems(rs, np.zeros((4, 1, 28, 28), np.float32), repeats=6, warmup=1,
                          progress=False)
    assert [r["system"] for r in recs] == ["a", "b", "c"]
    for r in recs:
        lat = r["latency_ms"]
        assert r["batch"] == 4 and r["threads"] == 1 and r["repeats"] == 6
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] and lat["mean"] > 0
        assert r["throughput"] == pytest.approx(4 * 1e3 / lat["p50"])
        assert r["latency_per_image_ms"] == pytest.approx(lat["p50"] / 4)
        assert r["cpu_ms"] >= 0
    timed = calls[3:]  # after the warm-up: round robin, each round starts one system later
    assert timed[:6] == ["a", "b", "c", "b", "c", "a"]
    assert all(timed.count(s) == 6 for s in "abc")


def test_sweep_covers_threads_and_batches():
    made = []

    def make(t):
        made.append(t)
        return _runners([])
    imgs = np.zeros((3, 1, 28, 28), np.float32)
    recs = M.sweep(make, imgs, batches=(1, 5), threads=(1, 2), repeats=4, warmup=0,
                   method="m", progress=False)
    assert made == [1, 2] and len(recs) == 2 * 2 * 3
    assert {(r["batch"], r["method"]) for r in recs} == {(1, "m"), (5, "m")}
    assert all(r["repeats"] >= 3 for r in recs)


def test_peak_rss_sees_the_allocation():
    d = M.peak_rss("big = np.ones(20_000_000)\nrun = lambda x: big.sum()")
    assert d["import_rss_bytes"] > 0
    assert d["model_rss_bytes"] > 120e6  # 160 MB of float64
    with pytest.raises(RuntimeError, match="subprocess failed"):
        M.peak_rss("raise SystemExit(3)")


def test_op_counts_binary_and_float_twin():
    torch = pytest.importorskip("torch")
    from lowbit.bench.baselines import float_twin
    from lowbit.train import registry
    torch.manual_seed(0)
    m = registry.build("bnn-vgg-small")
    q, f = M.op_counts(m), M.op_counts(float_twin(m))
    assert q["macs"] == f["macs"] > 1e8
    assert q["bops"] > 0 and 0 < q["float_macs"] < q["macs"]
    assert f["bops"] == 0 and f["float_macs"] == f["macs"]
    assert q["packed_weight_bytes"] < f["packed_weight_bytes"] == f["fp32_weight_bytes"]
