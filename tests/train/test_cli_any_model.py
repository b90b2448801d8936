"""Every command on a user's own model (``--model usermodels:tiny_resnet``) and data (.npz, RGB
3x16x16), and the up-front refusals: each one ``lowbit CMD: error: ...`` line, exit code 2."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lowbit.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE) not in sys.path:           # usermodels.py, as a user's module on the path
    sys.path.insert(0, str(HERE))
MODEL = "usermodels:tiny_resnet"
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(HERE)]),
           OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """200 RGB 3x16x16 images of 4 classes (the class shifts the pixel level)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    x = (rng.integers(0, 60, (200, 3, 16, 16)) + 50 * y[:, None, None, None]).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "rgb.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="module")
def run_dir(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "user"
    assert main(["train", "--model", MODEL, "--model-arg", "num_classes=4", "--model-arg",
                 "width=8", "--data", str(npz), "--epochs", "1", "--batch-size", "32",
                 "--out", str(out), "--device", "cpu", "--threads", "1"]) == 0
    return out


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_train_records_model_spec_and_input_shape(run_dir, npz):
    from lowbit.train.checkpoint import load_model
    result = json.loads((run_dir / "result.json").read_text())
    assert result["input_shape"] == [3, 16, 16] and result["test_images"] == 200
    assert result["config"]["val_size"] == 20                 # 10% of 200 images
    model, meta = load_model(run_dir / "checkpoint.pt")       # rebuilt through importlib
    assert meta["model"] == {"name": MODEL, "kwargs": {"num_classes": 4, "width": 8}}
    assert meta["input_shape"] == (3, 16, 16) and model.normalization.channels == 3
    # --resume of the finished run rebuilds the user's model from the checkpoint: a no-op
    assert main(["train", "--model", MODEL, "--data", str(npz), "--out", str(run_dir),
                 "--resume", "--device", "cpu"]) == 0
    assert main(["train", "--model", MODEL, "--data", str(npz), "--out", str(run_dir),
                 "--resume", "--model-arg", "width=16"]) == 2


def test_every_command_on_a_user_model(run_dir, npz, tmp_path, capsys):
    ckpt, lbm = str(run_dir / "checkpoint.pt"), str(tmp_path / "user.lbm")
    capsys.readouterr()
    assert main(["summary", ckpt]) == 0
    out = capsys.readouterr().out
    assert "input 3x16x16" in out and "block.conv" in out
    assert main(["export", ckpt, "-o", lbm]) == 0
    assert "exported for 3x16x16 input" in capsys.readouterr().out
    assert main(["summary", lbm]) == 0
    out = capsys.readouterr().out
    assert "input 3x16x16 uint8" in out and " add " in out and "8x8x8" in out
    macs = json.loads((run_dir / "result.json").read_text())["macs"]   # torch's count
    assert f"MACs {macs:,} = float {macs:,} + bitwise 0" in out
    lines = []
    for cmd in ("eval", "run"):
        assert main([cmd, lbm, "--data", str(npz), "--limit", "50", "--threads", "2"]) == 0
        lines.append(capsys.readouterr().out)
    assert lines[0] == lines[1].replace(lines[1].split(" in ")[-1], lines[0].split(" in ")[-1])
    assert "(model file, lowbit runtime): test accuracy" in lines[0] and "/50)" in lines[0]
    assert "2 thread(s)" in lines[0]
    assert main(["eval", ckpt, "--data", str(npz), "--limit", "50"]) == 0
    assert "/50)" in capsys.readouterr().out
    wide = str(tmp_path / "wide.lbm")                 # --input-size overrides the recorded shape
    assert main(["export", ckpt, "-o", wide, "--input-size", "3,24,24"]) == 0
    assert main(["summary", wide]) == 0
    assert "input 3x24x24 uint8" in capsys.readouterr().out
    assert main(["export", ckpt, "-o", wide, "--overwrite", "--input-size", "1,16,16"]) == 2
    assert "trained on 3-channel images" in _err(capsys)

    small, rep = tmp_path / "dc.lbm", tmp_path / "dc.json"
    assert main(["compress", ckpt, "-o", str(small), "--prune-epochs", "1", "--share-epochs",
                 "0", "--share-bits", "4", "--threads", "1", "--json", str(rep)]) == 0
    assert "Deep Compression of usermodels:tiny_resnet" in capsys.readouterr().out
    report = json.loads(rep.read_text())
    assert report["acc_compressed_from"] == "file" and report["input_shape"] == [3, 16, 16]
    assert report["targets"]["stem"] == "0"                    # generic preset: stem dense
    assert main(["eval", str(small), "--data", str(npz)]) == 0  # data recorded by train
    assert f"{report['acc_compressed']:.2%}" in capsys.readouterr().out


def test_untrained_user_model_summary(capsys):
    assert main(["summary", MODEL, "--model-arg", "width=4", "--input-size", "3,16,16"]) == 0
    out = capsys.readouterr().out
    assert "(untrained); input 3x16x16" in out and "Conv2d" in out


def test_binary_user_model_file_counts_bops(tmp_path, capsys):
    """A BNN version of the user's model, exported for 1x28x28, run on a test-only IDX folder."""
    import torch
    from lowbit.data import Normalization, write_idx
    from lowbit.runtime.summary import file_summary
    from lowbit.train.checkpoint import build_model, save_checkpoint
    torch.manual_seed(0)
    model = build_model(MODEL, scheme="bnn", in_channels=1)
    model.lowbit_input_shape = (1, 28, 28)
    save_checkpoint(tmp_path / "b.pt", model, normalization=Normalization(0.5, 0.25),
                    with_rng=False)
    lbm = tmp_path / "b.lbm"
    assert main(["export", str(tmp_path / "b.pt"), "-o", str(lbm)]) == 0
    s = file_summary(lbm)
    binary = [r for r in s["rows"] if r["bitwise"]]
    assert binary and all(r["bops"] == r["macs"] * r["w_bits"] * r["a_bits"] > 0 for r in binary)
    assert s["totals"]["bops"] == sum(r["bops"] for r in binary) and s["input"] == [1, 28, 28]
    assert main(["summary", str(lbm)]) == 0
    assert "qconv2d*" in capsys.readouterr().out
    idx = tmp_path / "idx"                       # test split only: enough for eval / run
    idx.mkdir()
    rng = np.random.default_rng(1)
    write_idx(idx / "t10k-images-idx3-ubyte", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    write_idx(idx / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 40, dtype=np.uint8))
    for cmd in ("eval", "run"):
        assert main([cmd, str(lbm), "--data", str(idx), "--limit", "30"]) == 0
        assert "/30)" in capsys.readouterr().out


def test_image_folder_resized_to_input_size(tmp_path, capsys):
    from PIL import Image
    rng = np.random.default_rng(2)
    for split, n in (("train", 30), ("test", 10)):
        for c in ("cat", "dog"):
            (tmp_path / "img" / split / c).mkdir(parents=True)
            for i in range(n):
                px = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(px).save(tmp_path / "img" / split / c / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train", "--model", MODEL, "--model-arg", "num_classes=2", "--data",
                 str(tmp_path / "img"), "--input-size", "3,16,16", "--epochs", "1",
                 "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["input_shape"] == [3, 16, 16] and result["config"]["val_size"] == 6
    assert main(["export", str(out / "checkpoint.pt"), "-o", str(tmp_path / "m.lbm")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "m.lbm"), "--data", str(tmp_path / "img")]) == 0
    assert "/20)" in capsys.readouterr().out          # the 20x20 test images resized too


def test_refusals(run_dir, npz, tmp_path, capsys):
    ckpt = str(run_dir / "checkpoint.pt")
    base = ["train", "--model", MODEL, "--data", str(npz), "--epochs", "1"]
    assert main(base + ["--out", str(tmp_path / "a"), "--model-arg", "width=abc"]) == 2
    assert _err(capsys) == (f"lowbit train: error: --model-arg width=abc: {MODEL} expects an "
                            f"integer for 'width'")
    assert main(base + ["--out", str(tmp_path / "a"), "--model-arg", "depth=3"]) == 2
    assert "takes no argument 'depth'" in _err(capsys)
    assert main(base + ["--out", str(tmp_path / "a"), "--val-size", "200"]) == 2
    assert "--val-size 200: must be smaller than the number of training images (200)" in _err(capsys)
    assert main(base + ["--out", str(tmp_path / "a"), "--model-arg", "num_classes=2"]) == 2
    assert "has 2 outputs but the labels go up to 3" in _err(capsys)
    assert main(base + ["--out", str(tmp_path / "a"), "--input-size", "3,8,8"]) == 2
    assert "--input-size asks for 3x8x8" in _err(capsys)
    # --out below an existing file fails even for root
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(base + ["--out", str(afile / "run")]) == 2
    assert _err(capsys).startswith(f"lowbit train: error: --out {afile / 'run'}: cannot create")
    assert main(base + ["--out", str(afile)]) == 2
    assert "is a file, expected a folder" in _err(capsys)
    # a model file where a checkpoint is expected, and a checkpoint where a model file is
    lbm = tmp_path / "m.lbm"
    assert main(["export", ckpt, str(lbm)]) == 0              # the old positional form
    capsys.readouterr()
    for cmd in (["export", str(lbm), "-o", str(tmp_path / "x.lbm")],
                ["compress", str(lbm), "-o", str(tmp_path / "x.lbm")]):
        assert main(cmd) == 2
        assert "is a lowbit model file, not a training checkpoint" in _err(capsys)
    assert main(["run", ckpt]) == 2
    assert "is a PyTorch checkpoint, not a lowbit model file" in _err(capsys)
    # export does not overwrite without --overwrite
    assert main(["export", ckpt, "-o", str(lbm)]) == 2
    assert _err(capsys) == (f"lowbit export: error: -o/--output {lbm}: file exists; pass "
                            f"--overwrite to replace it")
    assert main(["export", ckpt, "-o", str(lbm), "--overwrite"]) == 0
    assert main(["export", ckpt]) == 2
    assert "-o/--output FILE is required" in _err(capsys)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_unwritable_out_folder(npz, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["train", "--model", MODEL, "--data", str(npz), "--out",
                     str(locked / "run")]) == 2
        assert "cannot create this folder" in _err(capsys)
        assert main(["train", "--model", MODEL, "--data", str(npz), "--out", str(locked)]) == 2
        assert "folder is not writable" in _err(capsys)
    finally:
        locked.chmod(0o700)


def _no_torch(*argv: str) -> subprocess.CompletedProcess:
    code = ("import sys; sys.modules['torch'] = None; from lowbit.cli import main; "
            f"sys.exit(main({list(argv)!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, timeout=120)


def test_without_torch(run_dir, npz, tmp_path):
    ckpt = str(run_dir / "checkpoint.pt")
    hint = "this command needs PyTorch: pip install torch==2.13.0 then pip install lowbit[train]"
    for argv in (["train", "--model", MODEL, "--out", str(tmp_path / "o")],
                 ["train", "--model", "lenet5", "--out", str(tmp_path / "o")],
                 ["export", ckpt, "-o", str(tmp_path / "x.lbm")],
                 ["compress", ckpt, "-o", str(tmp_path / "x.lbm")],
                 ["eval", ckpt], ["summary", ckpt], ["summary", "lenet5"]):
        r = _no_torch(*argv)
        assert (r.returncode, r.stderr.strip()) == (2, f"lowbit {argv[0]}: error: {hint}"), argv
    lbm = tmp_path / "m.lbm"
    assert main(["export", ckpt, "-o", str(lbm)]) == 0
    for argv in (["eval", str(lbm), "--data", str(npz), "--limit", "20"],
                 ["run", str(lbm), "--data", str(npz)], ["summary", str(lbm)]):
        r = _no_torch(*argv)
        assert r.returncode == 0 and r.stderr == "", (argv, r.stderr)
