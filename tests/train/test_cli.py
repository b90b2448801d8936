"""The lowbit train / eval / summary commands, end to end on a tiny MNIST-style folder."""
import json

import numpy as np
import pytest

from lowbit.cli import main
from lowbit.data import write_idx

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture
def tiny_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "mnist"
    d.mkdir()
    for name, n in zip(NAMES, (300, 300, 50, 50)):
        shape = (n, 28, 28) if "images" in name else (n,)
        write_idx(d / (name + ".gz"), rng.integers(0, 256 if "images" in name else 10, shape, dtype=np.uint8))
    return d


def test_train_eval_summary(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "lenet300", "--data", str(tiny_dir), "--epochs", "1",
            "--out", str(out), "--val-size", "100", "--device", "cpu", "--batch-size", "50"]
    assert main(args) == 0
    assert "lenet300: test accuracy" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["epochs"] == 1 and result["test_images"] == 50 and 0 <= result["test_acc"] <= 1
    assert result["config"]["train_size"] == 200 and result["config"]["batch_size"] == 50

    assert main(["eval", str(out / "checkpoint.pt"), "--data", str(tiny_dir)]) == 0
    line = capsys.readouterr().out
    assert f"{result['test_acc']:.2%}" in line and "/50)" in line

    assert main(["summary", str(out / "checkpoint.pt")]) == 0
    assert "266,610" in capsys.readouterr().out

    # A second train into the same folder must not clobber it; --resume of a finished run is a no-op.
    assert main(args) == 2
    assert "a checkpoint is already there" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "none.pt")]) == 2
    assert capsys.readouterr().err.strip() == f"lowbit eval: error: {tmp_path / 'none.pt'}: checkpoint not found"
    assert main(["train", "--model", "lenet5", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "Fashion-MNIST files not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "no-such-model", "--out", str(tmp_path)])
    assert "unknown model 'no-such-model'; choose from:" in capsys.readouterr().err
    assert main(["summary", "lenet5"]) == 0
    assert "2,293,000" in capsys.readouterr().out
