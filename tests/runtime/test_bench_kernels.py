"""`lowbit bench kernels` runs end to end (on small shapes) and writes the promised JSON."""
import json

import pytest

pytest.importorskip("torch")

from lowbit.bench import kernels as bench  # noqa: E402
from lowbit.cli import main as cli_main  # noqa: E402


def test_bench_kernels_writes_json(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "CONV_SHAPES", [(5, 65)])
    monkeypatch.setattr(bench, "DENSE_SHAPES", [(2, 130, 70)])
    monkeypatch.setattr(bench, "TERNARY_SHAPES", [(4, 64)])
    out = tmp_path / "sub" / "kernels.json"
    assert cli_main(["bench", "kernels", "--json", str(out), "--repeats", "2"]) == 0
    rows = json.loads(out.read_text())
    ops = [(r["op"], r["shape"]) for r in rows]
    assert ops[:3] == [("binary_conv2d", "5x5x65->65"), ("binary_dense", "2x130->70"),
                       ("ternary_conv2d", "4x4x64->64")]
    for r in rows:
        assert {"shape", "lowbit_ms", "torch_ms", "speedup", "kernel"} <= set(r)
        assert r["lowbit_ms"] > 0 and r["speedup"] > 0 and r["lowbit_cpu_ms"] > 0
    if len(rows) > 3:                                   # the portable rows, when not the default
        assert rows[3]["kernel"].startswith("portable/")


def test_bench_kernels_refuses_bad_kernel(capsys):
    assert bench.main(kernel="sse9") == 2
    assert "--kernel='sse9' is not a kernel path" in capsys.readouterr().err
    assert bench.main(kernel="portable", variant="nope") == 2
    assert "--variant='nope'" in capsys.readouterr().err
