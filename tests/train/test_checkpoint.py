"""Checkpoints: round trip, atomic writes, clear errors, RNG states."""
import random

import numpy as np
import pytest
import torch

from lowbit.train import checkpoint as ck
from lowbit.train.checkpoint import (CheckpointError, build_model, load_checkpoint, load_model,
                                     rng_state, save_checkpoint, set_rng_state)
from lowbit.train.loop import evaluate, fit


def test_round_trip_through_fit(fashion_tiny, tmp_path):
    train, val = fashion_tiny
    r = fit("lenet5", train, val, epochs=1, out_dir=tmp_path, progress=False, device="cpu")
    model, meta = load_model(tmp_path / "checkpoint.pt")
    assert not model.training
    assert meta["model"] == {"name": "lenet5", "kwargs": {}}
    assert meta["epoch"] == 1 and meta["complete"] and len(meta["history"]) == 1
    assert meta["normalization"] == r.normalization == model.normalization
    assert meta["config"]["lr"] == 1e-3 and meta["config"]["train_size"] == 512
    x = torch.randn(4, 1, 28, 28)
    r.model.eval()
    assert torch.equal(model(x), r.model(x))
    assert evaluate(model, *val) == r.history[-1]["val_acc"]
    assert (tmp_path / "history.json").is_file()


def test_save_checkpoint_directly(tmp_path):
    m = build_model("lenet300", num_classes=4)
    save_checkpoint(tmp_path / "m.pt", m, epoch=0, extra={"note": "hello"})
    model, meta = load_model(tmp_path / "m.pt")
    assert meta["model"]["kwargs"] == {"num_classes": 4} and meta["extra"] == {"note": "hello"}
    assert model.fc3.out_features == 4 and meta["normalization"] is None
    assert load_checkpoint(tmp_path / "m.pt")["optimizer_state"] is None


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, build_model("lenet300"), epoch=1)
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, build_model("lenet300"), epoch=2)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_model(tmp_path / "missing.pt")
    good = save_checkpoint(tmp_path / "good.pt", build_model("lenet300"))
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.pt: not a readable checkpoint"):
        load_model(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt: format: expected 'lowbit-checkpoint', got None"):
        load_model(tmp_path / "foreign.pt")
    ckpt = torch.load(good, weights_only=True)
    ckpt["model"]["name"] = "no-such-model"
    torch.save(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="unknown.pt: field 'model.name': unknown model 'no-such-model'"):
        load_model(tmp_path / "unknown.pt")
    ckpt["model"]["name"] = "lenet5"
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt: field 'model_state' does not fit model 'lenet5'"):
        load_model(tmp_path / "mismatch.pt")
    del ckpt["epoch"]
    torch.save(ckpt, tmp_path / "noepoch.pt")
    with pytest.raises(CheckpointError, match="noepoch.pt: field 'epoch': missing"):
        load_checkpoint(tmp_path / "noepoch.pt")


def test_rng_state_round_trip():
    state = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_resume_needs_a_training_checkpoint(fashion_tiny, tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", build_model("lenet300"), epoch=1)
    with pytest.raises(ValueError, match="field 'optimizer_state': missing, so the run cannot be resumed"):
        fit("lenet300", fashion_tiny[0], resume=True, out_dir=tmp_path, progress=False)
