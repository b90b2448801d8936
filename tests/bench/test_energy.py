"""The energy estimate (lowbit.bench.energy): hand-computed totals of a tiny model, binary
ops, the cache rule, the configurable table, and the summary / bench columns."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from lowbit.bench import energy as E
from lowbit.train.export import export_model

torch.set_num_threads(1)


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    path = tmp_path / "tiny.lbm"
    export_model(model, path, {"mean": 0.5, "std": 0.25, "scale": 255.0}, input_shape=(1, 2, 2))
    return path


def test_hand_computed_tiny_model(tiny):
    e = E.estimate_file(str(tiny))
    # input: 4 pixels, one SRAM table read each                     4 x 5         =  20
    # flatten: reads 16 B, writes 16 B (SRAM, 4 words each)         8 x 5         =  40
    # dense: 12 MACs x (3.7 + 0.9) + 3 bias adds x 0.9               55.2 + 2.7   =  57.9
    #        weights 12 + bias 3 floats = 60 B = 15 words, input 4 words, output 3 words
    #                                                               22 x 5        = 110
    assert e["compute_pj"] == pytest.approx(57.9)
    assert e["sram_pj"] == pytest.approx(20 + 40 + 110)
    assert e["dram_pj"] == 0 and e["total_pj"] == pytest.approx(227.9)
    # a 10-byte cache: every tensor but the 4 input pixels' table reads comes from DRAM
    small = E.estimate_file(str(tiny), E.load_table(cache_kb=10 / 1024))
    assert small["dram_pj"] == pytest.approx((4 + 4 + 15 + 4 + 3) * 640)
    assert small["sram_pj"] == pytest.approx(20) and small["compute_pj"] == pytest.approx(57.9)
    # int8 pricing of the float model (ORT int8): 8-bit multiplies, 1-byte tensors
    q = E.estimate_file(str(tiny), int8=True)
    assert q["compute_pj"] == pytest.approx(12 * (0.2 + 0.1) + 3 * 0.9)


def test_binary_and_other_ops():
    t = E.TABLE
    row = {"op": "qdense", "bitwise": True, "macs": 640, "bops": 640, "w_bits": 1, "a_bits": 1,
           "out": "bits", "out_elems": 10, "weight_bytes": 80, "in_bytes": [8], "out_bytes": 8}
    e = E.op_energy(row)
    assert e["compute"] == pytest.approx(10 * (t["binary_word_64"] + t["int_add_32"]) + 10 * 0.1)
    assert e["sram"] == pytest.approx((20 + 2 + 2) * 5) and e["dram"] == 0
    bwn = dict(row, bitwise=False, a_bits=32, out="float", bops=0)    # +-alpha: adds
    assert E.op_energy(bwn)["compute"] == pytest.approx(640 * 0.9 + 10 * (3.7 + 0.9))
    assert E.op_energy({"op": "batchnorm", "out_elems": 10})["compute"] == pytest.approx(46)
    assert E.op_energy({"op": "maxpool2d", "out_elems": 10, "pool_taps": 4})["compute"] \
        == pytest.approx(10 * 3 * 0.9)
    assert E.op_energy({"op": "flatten", "out_elems": 10})["total"] == 0


def test_table_is_configurable(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"dram_32": 1000, "cache_bytes": 65536}))
    t = E.load_table(str(p))
    assert t["dram_32"] == 1000 and t["cache_bytes"] == 65536 and t["sram_32"] == 5
    assert E.load_table(str(p), cache_kb=1)["cache_bytes"] == 1024
    p.write_text(json.dumps({"dram": 1}))
    with pytest.raises(ValueError, match="unknown key 'dram'"):
        E.load_table(str(p))
    with pytest.raises(ValueError, match="expected a number"):
        E.load_table(overrides={"sram_32": -1})


def test_summary_shows_energy(tiny, tmp_path, capsys):
    from lowbit.cli import main
    assert main(["summary", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "energy nJ" in out and "estimated energy per inference: 0.23 nJ" in out
    assert "Horowitz, ISSCC 2014" in out
    assert main(["summary", str(tiny), "--cache-kb", "0"]) == 0
    assert "DRAM" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    assert main(["summary", str(tiny), "--energy-table", str(bad)]) == 2
    assert "expected a JSON object" in capsys.readouterr().err


def test_binary_model_costs_less_than_its_float_twin(tmp_path):
    from lowbit.bench.baselines import float_twin
    from lowbit.train.checkpoint import build_model
    torch.manual_seed(0)
    model = build_model("bnn-lenet5").eval()
    export_model(model, tmp_path / "b.lbm", None)
    b = E.estimate_file(str(tmp_path / "b.lbm"))
    f = E.estimate_module(float_twin(model), (1, 28, 28))
    assert b["total_pj"] < f["total_pj"] / 5 and b["compute_pj"] < f["compute_pj"]
    assert np.isfinite(b["total_uj"])
