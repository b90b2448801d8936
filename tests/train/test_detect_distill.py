"""Knowledge distillation of a detector's heatmap (``lowbit detect train --teacher``): the
Bernoulli KL against numpy, its gradient, the mixed heatmap loss, and training end to end with
a float teacher (config, history, resume, refusals)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit.train.checkpoint import load_checkpoint
from lowbit.train.detect_command import train_command
from lowbit.train.detect_fit import fit_detector
from lowbit.train.detect_loss import detection_loss, focal_loss, heatmap_distillation

torch.set_num_threads(1)
_spec = importlib.util.spec_from_file_location(
    "_detector_test", Path(__file__).resolve().parent / "test_detector.py")
_td = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_td)
shapes, _fake_yolo = _td.shapes, _td._fake_yolo

TINY = dict(model_args={"width": 8}, epochs=1, batch_size=8, threads=1, progress=False)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_heatmap_distillation_is_the_bernoulli_kl(temperature):
    rng = np.random.default_rng(0)
    s, t = rng.normal(0, 3, (2, 3, 4, 5)), rng.normal(0, 3, (2, 3, 4, 5))
    p, q = _sigmoid(s / temperature), _sigmoid(t / temperature)
    want = (q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))).sum() \
        * temperature ** 2 / 3
    got = heatmap_distillation(torch.tensor(s), torch.tensor(t), torch.tensor(3.0), temperature)
    assert got.item() == pytest.approx(want, rel=1e-9)
    same = heatmap_distillation(torch.tensor(t), torch.tensor(t), torch.tensor(3.0), temperature)
    assert abs(same.item()) < 1e-12
    # gradient in the student's logits: T (p - q) / N; none flows into the teacher
    st, tt = torch.tensor(s, requires_grad=True), torch.tensor(t, requires_grad=True)
    heatmap_distillation(st, tt, torch.tensor(3.0), temperature).backward()
    np.testing.assert_allclose(st.grad.numpy(), temperature * (p - q) / 3, rtol=1e-9)
    assert tt.grad is None


def test_detection_loss_mixes_focal_and_teacher_terms():
    torch.manual_seed(0)
    hm, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    target = torch.zeros(2, 3, 4, 5)
    target[0, 2, 1, 3] = target[1, 0, 2, 2] = 1.0
    t = {"heatmap": target, "mask": target.eq(1).any(1, keepdim=True).float(),
         "size": torch.zeros(2, 2, 4, 5), "offset": torch.zeros(2, 2, 4, 5)}
    out = (hm, torch.zeros(2, 2, 4, 5), torch.zeros(2, 2, 4, 5))
    base, parts = detection_loss(out, t)
    mixed, parts2 = detection_loss(out, t, teacher_heatmap=teacher, distill=0.25,
                                   temperature=2.0)
    focal = focal_loss(hm, target, torch.tensor(2.0)).item()
    kd = heatmap_distillation(hm, teacher, torch.tensor(2.0), 2.0).item()
    assert "distill" not in parts and parts2["distill"] == pytest.approx(kd)
    assert parts2["heatmap"] == pytest.approx(0.75 * focal + 0.25 * kd)
    assert mixed.item() - base.item() == pytest.approx(0.25 * (kd - focal), rel=1e-5)
    with pytest.raises(ValueError, match="teacher: its heatmap is"):
        detection_loss(out, t, teacher_heatmap=teacher[:, :2])


def test_fit_with_a_float_teacher_records_resumes_and_refuses(tmp_path):
    train, val = shapes(16, seed=0), shapes(8, seed=1)
    fit_detector(train, val, model="float", out_dir=tmp_path / "teacher", **TINY)
    teacher = tmp_path / "teacher" / "checkpoint.pt"
    kw = dict(TINY, epochs=2)
    ref = fit_detector(train, val, teacher=teacher, distill=0.7, out_dir=tmp_path / "a", **kw)
    cfg = load_checkpoint(tmp_path / "a")["config"]
    assert (cfg["teacher"], cfg["distill"], cfg["temperature"]) == (str(teacher), 0.7, 1.0)
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert all(h["train_distill"] > 0 for h in hist)
    plain = fit_detector(train, val, out_dir=tmp_path / "p", **kw)
    assert "train_distill" not in plain.history[0]
    assert plain.history[0]["train_loss"] != ref.history[0]["train_loss"]

    class Killed(Exception):
        pass

    def stop(rec):
        raise Killed
    with pytest.raises(Killed):
        fit_detector(train, val, teacher=teacher, distill=0.7, out_dir=tmp_path / "b",
                     on_epoch_end=stop, **kw)
    with pytest.raises(ValueError, match="'teacher'"):      # another teacher on resume
        fit_detector(train, val, teacher=tmp_path / "a" / "checkpoint.pt", distill=0.7,
                     out_dir=tmp_path / "b", resume=True, **kw)
    resumed = fit_detector(train, val, out_dir=tmp_path / "b", resume=True, **kw)  # restored
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in ref.history]
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

    with pytest.raises(ValueError, match="give the teacher checkpoint"):
        fit_detector(train, val, distill=0.5, **kw)
    with pytest.raises(ValueError, match=r"distill: expected a weight in \(0, 1\]"):
        fit_detector(train, val, teacher=teacher, distill=1.5, **kw)
    fit_detector(train, val, model="float", out_dir=tmp_path / "s4",
                 **{**TINY, "model_args": {"width": 8, "stride": 4}})
    with pytest.raises(ValueError, match="teacher: expected a detector of stride 8"):
        fit_detector(train, val, teacher=tmp_path / "s4" / "checkpoint.pt", **kw)


def test_train_command_teacher_flags(tmp_path, monkeypatch, capsys):
    _fake_yolo(monkeypatch, shapes(16, seed=0), shapes(8, seed=1))
    kw = dict(epochs=1, batch_size=8, width=8, threads=1, progress=False)
    assert train_command("data", model="float", out=tmp_path / "t", **kw) == 0
    assert train_command("data", out=tmp_path / "s", teacher=str(tmp_path / "t" /
                                                                  "checkpoint.pt"),
                         distill=0.5, temperature=2.0, **kw) == 0
    cfg = load_checkpoint(tmp_path / "s")["config"]
    assert (cfg["distill"], cfg["temperature"]) == (0.5, 2.0)
    capsys.readouterr()
    assert train_command("data", out=tmp_path / "x", teacher=str(tmp_path / "nope.pt"),
                         **kw) == 2
    assert "--teacher" in capsys.readouterr().err and not (tmp_path / "x" / "x").exists()
    assert train_command("data", out=tmp_path / "y", temperature=2.0, **kw) == 2
    assert "--teacher" in capsys.readouterr().err
