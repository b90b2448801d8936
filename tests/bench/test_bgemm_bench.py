"""`lowbit bench bgemm` runs end to end (on small shapes) and writes the promised JSON."""
import json

import pytest

pytest.importorskip("torch")

from lowbit.bench import bgemm as bench  # noqa: E402
from lowbit.cli import main as cli_main  # noqa: E402


def test_bench_bgemm_writes_json(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SHAPES", [(5, 7, 65), (3, 9, 200)])
    out = tmp_path / "sub" / "bgemm.json"
    assert cli_main(["bench", "bgemm", "--json", str(out), "--repeats", "2",
                     "--kernel", "portable"]) == 0
    rows = json.loads(out.read_text())
    assert [r["shape"] for r in rows] == ["5x7x65", "3x9x200"]
    for r in rows:
        assert {"shape", "lowbit_ms", "torch_ms", "speedup", "kernel"} <= set(r)
        assert r["kernel"].startswith("portable/") and r["lowbit_ms"] > 0 and r["speedup"] > 0


def test_bench_bgemm_refuses_bad_kernel(capsys):
    assert bench.main(kernel="sse9") == 2
    assert "--kernel='sse9' is not a kernel path" in capsys.readouterr().err
