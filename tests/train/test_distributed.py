"""Data-parallel training on torchrun (2 local ranks, gloo on CPU) against one process."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lowbit.data import DataError, load
from lowbit.train import distributed


def test_shard_splits_a_batch_into_contiguous_parts():
    for n in (0, 1, 2, 5, 97, 128):
        for world in (1, 2, 3, 8):
            parts = [distributed.shard(n, r, world) for r in range(world)]
            sizes = [p.stop - p.start for p in parts]
            assert parts[0].start == 0 and parts[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
            assert max(sizes) - min(sizes) <= 1 and sorted(sizes, reverse=True) == sizes


def test_single_process_context_is_inactive(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.setup(torch.device("cpu"))
    assert not ctx.active and ctx.main and not ctx.owns_group
    model = torch.nn.Linear(2, 2)
    assert ctx.wrap(model, torch.device("cpu")) is model
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="inconsistent"):
        distributed.world_from_env()


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """600 training and 300 test images of Fashion-MNIST as an .npz folder."""
    try:
        x, y = load("train")
        tx, ty = load("test")
    except DataError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")
    d = tmp_path_factory.mktemp("fmnist-subset")
    np.savez(d / "train.npz", x=x[:600], y=y[:600])
    np.savez(d / "test.npz", x=tx[:300], y=ty[:300])
    return d


class _Stop(Exception):
    pass


def _stop_after_first_epoch(rec):
    if rec["epoch"] == 1:
        raise _Stop


def test_torchrun_two_ranks_resume_and_match_one_process(subset, tmp_path, monkeypatch):
    """One process trains lenet300 for 2 epochs.  The same run stopped after epoch 1 is resumed
    by torchrun on 2 ranks (both load the checkpoint; each runs half of every global batch of
    97, the last batch 8 + 7 images): rank 0 alone writes the one checkpoint, and the weights
    after epoch 2 equal the single process's up to float rounding (no BatchNorm in lenet300:
    the gradients averaged over the two shards are the full batch's)."""
    from lowbit.train import commands, loop
    args = dict(model="lenet300", data=str(subset), epochs=2, batch_size=97, val_size=100,
                seed=3, progress=False, threads=1)
    one, two = tmp_path / "one", tmp_path / "two"
    assert commands.train(out=str(one), **args) == 0
    def fit_stopping(*a, **kw):
        kw["on_epoch_end"] = _stop_after_first_epoch
        return loop.fit(*a, **kw)
    monkeypatch.setattr(commands, "fit", fit_stopping)
    with pytest.raises(_Stop):
        commands.train(out=str(two), **args)
    assert torch.load(two / "checkpoint.pt", weights_only=True)["epoch"] == 1

    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "lowbit", "train", "--model", "lenet300", "--data", str(subset), "--epochs", "2",
           "--batch-size", "97", "--val-size", "100", "--seed", "3", "--out", str(two),
           "--resume"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert out.count("resuming") == 1 and out.count("test accuracy") == 1, out   # rank 0 only
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.pt", "history.json",
                                                     "result.json"]
    a = torch.load(one / "checkpoint.pt", weights_only=True)
    b = torch.load(two / "checkpoint.pt", weights_only=True)
    assert b["epoch"] == 2 and b["config"] == a["config"]
    for k, wa in a["model_state"].items():
        wb = b["model_state"][k]
        assert float((wa - wb).norm() / wa.norm()) < 1e-5, k
    ha, hb = a["history"][-1], b["history"][-1]
    assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5)
    assert hb["train_acc"] == ha["train_acc"] and hb["val_acc"] == ha["val_acc"]
    ra = json.loads((one / "result.json").read_text())
    rb = json.loads((two / "result.json").read_text())
    assert rb["test_acc"] == ra["test_acc"]
