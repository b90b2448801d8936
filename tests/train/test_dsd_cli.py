"""lowbit train --dsd: Dense-Sparse-Dense in one run (lowbit.train.dsdtrain)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lowbit.cli import main
from lowbit.data import write_idx
from lowbit.train import dsdtrain
from lowbit.train.checkpoint import build_model, load_model
from lowbit.train.loop import fit

torch.set_num_threads(1)
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture
def tiny_dir(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "mnist"
    d.mkdir()
    for name, n in zip(NAMES, (300, 300, 50, 50)):
        shape = (n, 28, 28) if "images" in name else (n,)
        write_idx(d / (name + ".gz"), rng.integers(0, 256 if "images" in name else 10, shape,
                                                   dtype=np.uint8))
    return d


def test_phases():
    assert dsdtrain.phases(3) == (1, 2)
    assert dsdtrain.phases(15) == (5, 10)
    assert dsdtrain.phases(4) == (1, 3)
    with pytest.raises(ValueError, match="at least 3 epochs"):
        dsdtrain.phases(2)


def test_schedule_prunes_holds_and_releases():
    torch.manual_seed(0)
    model = build_model("lenet300")
    sched = dsdtrain.attach(model, "0.5,fc3=0.2", epochs=3)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (256, 28, 28), dtype=np.uint8), rng.integers(0, 10, 256)
    seen = []

    def on_epoch_end(rec):                 # the weights each epoch trained, then the schedule
        seen.append({n: round(float((m.weight == 0).float().mean()), 6)
                     for n, m in dsdtrain.dsd_layers(model).items()})
        sched.on_epoch_end(rec)
    fit(model, (x, y), epochs=3, lr=1e-3, batch_size=64, device="cpu", progress=False,
        on_epoch_end=on_epoch_end, name="lenet300")
    assert max(seen[0].values()) == 0.0                              # dense
    assert seen[1] == {"fc1": 0.5, "fc2": 0.5, "fc3": 0.2}           # sparse, exactly, after
    assert max(seen[2].values()) < 0.01                              # steps of Adam: re-dense
    assert not hasattr(model.fc1, "weight_mask")
    dsdtrain.detach(model)
    assert "_dsd_schedule" not in dict(model.named_modules())
    assert sched.summary(3)["phases"] == {"dense": [1, 1], "sparse": [2, 2], "redense": [3, 3]}


def test_binary_layers_are_not_pruned():
    model = build_model("bnn-lenet5")
    assert set(dsdtrain.dsd_layers(model)) == {"conv1", "fc2"}
    with pytest.raises(ValueError, match="not prunable float layers"):
        dsdtrain.DSDSchedule(model, {"conv2": 0.5}, 3)
    with pytest.raises(ValueError, match="expected a sparsity"):
        dsdtrain.targets_of(build_model("lenet300"), "fc1=1.5")


def test_train_dsd_flag(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "lenet300", "--data", str(tiny_dir), "--epochs", "3",
            "--out", str(out), "--val-size", "100", "--device", "cpu", "--batch-size", "50",
            "--dsd", "0.5"]
    assert main(args) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["dsd"] == "0.5" and result["epochs"] == 3
    assert result["dsd"]["achieved_sparse_phase"] == {"fc1": 0.5, "fc2": 0.5, "fc3": 0.5}
    assert result["dsd"]["phases"]["sparse"] == [2, 2]
    model, meta = load_model(out / "checkpoint.pt")          # a plain lenet300 checkpoint
    assert meta["model"] == {"name": "lenet300", "kwargs": {}}
    assert float((model.fc1.weight == 0).float().mean()) < 0.01
    # resumed inside the sparse phase: the masks come back from the checkpoint's zeros
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    ck["epoch"] = 1
    m, sched, epochs = dsdtrain.prepare("lenet300", {}, "0.5", None, 0, None)
    assert epochs == 15 and not hasattr(m.fc1, "weight_mask")     # the recipe's 15 epochs
    torch.save(ck, tmp_path / "c1.pt")
    m, sched, epochs = dsdtrain.prepare("lenet300", {}, "0.5", None, 0, tmp_path / "c1.pt")
    assert epochs == 3 and float((m.fc1.weight == 0).float().mean()) == 0.5
    assert hasattr(m.fc1, "weight_mask")
    # a changed --dsd on resume is refused; no --dsd resumes with the run's own
    assert main(args[:-1] + ["0.3", "--resume"]) == 2
    assert "'dsd'" in capsys.readouterr().err
    assert main(args[:-2] + ["--resume"]) == 0
    assert main(args[:-1] + ["1.0", "--overwrite"]) == 2
