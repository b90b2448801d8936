"""Knowledge distillation: the loss against a numpy transcription, the teacher's
re-normalisation, fit with a teacher (config, resume, errors) and the float Bi-Real twin."""
import numpy as np
import pytest
import torch
from torch import nn

from lowbit.data import Normalization
from lowbit.train.checkpoint import build_model, load_checkpoint
from lowbit.train.distill import Teacher, distillation_loss
from lowbit.train.layers import QuantConv2d
from lowbit.train.loop import fit


def _np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("alpha,t", [(0.5, 4.0), (1.0, 2.0), (0.25, 1.0)])
def test_loss_matches_hinton_formula_in_numpy(alpha, t):
    rng = np.random.default_rng(0)
    s, te = rng.normal(size=(6, 5)) * 3, rng.normal(size=(6, 5)) * 3
    y = rng.integers(0, 5, size=6)
    ps, pt = _np_softmax(s / t), _np_softmax(te / t)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(1).mean() * t * t
    ce = -np.log(_np_softmax(s)[np.arange(6), y]).mean()
    want = (1 - alpha) * ce + alpha * kl
    got = distillation_loss(torch.tensor(s), torch.tensor(te), torch.tensor(y), alpha, t)
    assert got.item() == pytest.approx(want, rel=1e-9)
    # equal logits: no soft loss at all
    same = distillation_loss(torch.tensor(s), torch.tensor(s), torch.tensor(y), 1.0, t)
    assert abs(same.item()) < 1e-12


def test_teacher_sees_the_students_pixels_through_its_own_normalisation(fashion_tiny, tmp_path):
    train, val = fashion_tiny
    run = fit("lenet5", train, val, epochs=1, device="cpu", progress=False, batch_size=64,
              out_dir=tmp_path / "t")
    tnorm = run.normalization
    other = Normalization(mean=0.1, std=0.5)
    teacher = Teacher(tmp_path / "t" / "checkpoint.pt", other, (1, 28, 28), 0.5, 4.0)
    u8 = torch.from_numpy(train[0][:8].astype(np.float32) / 255.0).unsqueeze(1)
    x_student = (u8 - 0.1) / 0.5
    x_teacher = (u8 - tnorm.mean) / tnorm.std
    run.model.eval()
    with torch.no_grad():
        want = run.model(x_teacher)
    assert torch.allclose(teacher.logits(x_student), want, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in teacher.model.parameters())
    with pytest.raises(ValueError, match="teacher takes images of shape"):
        Teacher(tmp_path / "t" / "checkpoint.pt", other, (1, 32, 32))
    with pytest.raises(ValueError, match="distill: expected a weight"):
        Teacher(tmp_path / "t" / "checkpoint.pt", other, (1, 28, 28), alpha=0.0)


def test_fit_with_a_teacher_records_it_resumes_and_moves_towards_it(fashion_tiny, tmp_path):
    train, val = fashion_tiny
    kw = dict(device="cpu", progress=False, batch_size=64, seed=1)
    fit("lenet5", train, val, epochs=2, out_dir=tmp_path / "t", **kw)
    ck = tmp_path / "t" / "checkpoint.pt"
    dkw = dict(kw, teacher=ck, distill=1.0, temperature=2.0)
    ref = fit("bnn-lenet5", train, val, epochs=2, out_dir=tmp_path / "a", **dkw)
    assert (ref.config["teacher"], ref.config["distill"], ref.config["temperature"]) == \
        (str(ck), 1.0, 2.0)
    plain = fit("bnn-lenet5", train, val, epochs=2, out_dir=tmp_path / "p", **kw)
    diff = [not torch.equal(a, b) for a, b in zip(ref.model.state_dict().values(),
                                                  plain.model.state_dict().values())]
    assert any(diff)                                     # the soft labels changed the run

    class Killed(Exception):
        pass

    def kill(rec):
        raise Killed

    with pytest.raises(Killed):
        fit("bnn-lenet5", train, val, epochs=2, out_dir=tmp_path / "b", on_epoch_end=kill,
            **dkw)
    resumed = fit("bnn-lenet5", train, val, epochs=2, out_dir=tmp_path / "b", resume=True, **kw)
    for k, v in ref.model.state_dict().items():           # the teacher came back from config
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    with pytest.raises(ValueError, match="temperature"):
        fit("bnn-lenet5", train, val, epochs=2, out_dir=tmp_path / "b", resume=True,
            **dict(dkw, temperature=3.0))
    with pytest.raises(ValueError, match="--teacher"):
        fit("bnn-lenet5", train, val, epochs=1, distill=0.5, **kw)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["config"]["teacher"] == str(ck)


def test_float_bireal_twin_has_float_convs_behind_a_relu():
    m = build_model("bireal-resnet", width=8, blocks="1,1", conv="float")
    blocks = list(m.blocks)
    assert all(isinstance(b.conv, nn.Conv2d) and not isinstance(b.conv, QuantConv2d)
               and isinstance(b.pre, nn.ReLU) for b in blocks)
    binary = build_model("bireal-resnet", width=8, blocks="1,1")
    assert all(isinstance(b.conv, QuantConv2d) and b.pre is None for b in binary.blocks)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="conv: expected one of binary, float"):
        build_model("bireal-resnet", conv="ternary")


def test_cli_teacher_errors_are_one_line(tmp_path, capsys):
    from lowbit.cli import main
    assert main(["train", "--model", "lenet5", "--teacher", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--teacher" in err[0] and "none.pt" in err[0]
