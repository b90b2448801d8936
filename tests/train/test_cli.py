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
    assert capsys.readouterr().err.strip() == (f"lowbit eval: error: {tmp_path / 'none.pt'}: no "
                                               f"such file (expected a checkpoint or a lowbit "
                                               f"model file)")
    assert main(["train", "--model", "lenet5", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "Fashion-MNIST files not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "no-such-model", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'; choose from:" in err and len(err.splitlines()) == 1
    assert main(["summary", "lenet5"]) == 0
    assert "2,293,000" in capsys.readouterr().out


def test_version_and_defaults_in_help(capsys):
    from lowbit import __version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"lowbit {__version__}"
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "-o FILE, --output FILE" in out and "--share-bits SPEC" in out
    assert "(default: 0.001)" in out and "--bits" not in out and "--out " not in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default: fashion-mnist)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv, flag", [
    (["train", "--model", "lenet5", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["train", "--model", "lenet5", "--out", "o", "--batch-size", "-5"], "--batch-size"),
    (["train", "--model", "lenet5", "--out", "o", "--epochs", "0"], "--epochs"),
    (["train", "--model", "lenet5", "--out", "o", "--threads", "0"], "--threads"),
    (["train", "--model", "lenet5", "--out", "o", "--val-size", "-1"], "--val-size"),
    (["train", "--model", "lenet5", "--out", "o", "--input-size", "3,32"], "--input-size"),
    (["train", "--model", "lenet5", "--out", "o", "--model-arg", "width"], "--model-arg"),
    (["run", "m.lbm", "--limit", "0"], "--limit"),
    (["eval", "m.lbm", "--threads", "0"], "--threads"),
    (["compress", "c.pt", "-o", "m.lbm", "--prune-epochs", "0"], "--prune-epochs"),
])
def test_bad_numbers_are_refused_by_the_parser(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"lowbit {argv[0]}: error: argument {flag}")


def test_model_arguments_are_typed_by_the_builder_signature():
    from lowbit.cli import build_parser
    from lowbit.train.checkpoint import builder_kwargs
    args = build_parser().parse_args(["train", "--model", "xnor-lenet5", "--out", "x",
                                      "--model-arg", "order=CBAP"])
    assert builder_kwargs(args.model, args.model_arg) == {"order": "CBAP"}
    assert builder_kwargs("twn-lenet5", [("levels", "5"), ("per_channel", "true")]) == \
        {"levels": 5, "per_channel": True}
    assert builder_kwargs("bnn-lenet5", [("width", "1")]) == {"width": 1.0}
    assert builder_kwargs("dorefa-lenet5", [], {"bits": "2,2,32"}) == {"bits": "2,2,32"}
    with pytest.raises(ValueError, match="--bits: lenet5 takes no argument 'bits'"):
        builder_kwargs("lenet5", [], {"bits": "1,2,6"})
    with pytest.raises(ValueError, match="twn-lenet5 expects true or false for 'per_channel'"):
        builder_kwargs("twn-lenet5", [("per_channel", "maybe")])
    with pytest.raises(ValueError, match="twn-lenet5 expects an integer for 'levels'"):
        builder_kwargs("twn-lenet5", [("levels", "5.5")])
